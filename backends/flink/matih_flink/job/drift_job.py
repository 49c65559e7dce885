"""The drift job: every watched deployment's inference log, in event-time tumbling windows, against its baselines.

``python -m matih_flink.job.drift_job SPEC.json`` in the Flink environment (the runner starts it). The plan:

1. **Source** (Flink SQL, Java): one Kafka table over every watched ``inference.*`` and ``labels.*`` topic and
   the clock topic, each message's Kafka timestamp (the record's ``timestamp``) as event time, the watermark
   ``allowed_lateness`` behind the newest one. A topic silent for ``idle_timeout`` holds nobody back; the
   clock topic, which the ml-service ticks every second, then carries the watermark on, so a deployment's
   window closes on time whether or not it is still serving.
2. **Micro-batches** (SQL, Java): per topic, 1-second event-time windows of the raw records (``LISTAGG``),
   so Python sees one element per topic and second instead of one per request.
3. **Windows** (a keyed process function, Python, keyed by deployment): each micro-batch's rows grouped by
   the version that answered, aggregated on that version's baseline edges with the very functions the
   in-process check uses (the plan's ``kernel``: ``matih_lite.monitoring.window``), merged into the window's
   aggregate in keyed state; an event-time timer at each window's end closes it: labels joined, compared
   with the configured tests and thresholds, one result per (deployment, version, window) and one alert per
   drifting feature. A larger window that a smaller one tiles (``1d`` over ``1h``) is merged from the
   smaller ones as they close, as the in-process check merges them.
4. **Sinks**: ``drift.results`` and ``drift.alerts`` (at least once). Every result has an idempotent key
   (``tenant/deployment/window/end/vN``); after a restart from a checkpoint the job skips the keys the
   results topic already holds (``skip_keys``, read by the runner), and the ml-service records each window
   once (``Monitoring.record`` is idempotent), so a restart never double-alerts.

Baselines are fetched from the ml-service over REST with the job's token of each tenant and cached.
The last result of a window carries the deployment's report (``report``), which the ml-service records.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from matih_flink.job.common import environment, interval, kafka_sink, read_spec, source_table

PROFILE_TTL_S = 300.0
"""How long a fetched baseline is reused before it is fetched again (a rebuilt baseline is seen after this)."""
MISSING_TTL_S = 30.0


class ServiceUnreachable(RuntimeError):
    """The ml-service did not answer a baseline request: the job fails and is restarted from its checkpoint."""


def _version_number(text: Any) -> int | None:
    try:
        return int(str(text).lstrip("vV"))
    except (TypeError, ValueError):
        return None


def make_function(spec: dict[str, Any]) -> Any:
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, OutputTag
    from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

    alerts_tag = OutputTag("alerts", Types.STRING())

    class DriftWindows(KeyedProcessFunction):
        """Keyed by deployment: its open windows (aggregates per version) and recent labels, in keyed state."""

        def open(self, runtime_context: Any) -> None:
            import msgspec

            self.decode = msgspec.json.decode
            self.kernel = importlib.import_module(spec["kernel"])
            self.stats = self.kernel.stats
            self.topics = spec["topics"]
            self.targets = spec["targets"]
            self.lateness = int(spec["lateness_ms"])
            self.settings = {k: self.kernel.WindowSettings.from_dict(t["settings"]) for k, t in self.targets.items()}
            self.plans = {k: _window_plan(t["windows"]) for k, t in self.targets.items()}
            self.tokens = json.loads(os.environ.get("MATIH_DRIFT_TOKENS") or "{}")
            self.skip = set(spec.get("skip_keys") or ())
            self.profiles: dict[tuple[str, str, int], tuple[float, Any]] = {}
            self.windows = runtime_context.get_map_state(
                MapStateDescriptor("windows", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
            self.labels = runtime_context.get_state(ValueStateDescriptor("labels", Types.PICKLED_BYTE_ARRAY()))

        # ---- baselines --------------------------------------------------------------------------
        def profile(self, target: dict[str, Any], version: int) -> Any:
            key = (target["tenant"], target["model"], version)
            found = self.profiles.get(key)
            if found is not None and found[0] > time.monotonic():
                return found[1]
            url = (f"{spec['service_url'].rstrip('/')}/api/v1/drift/baselines/"
                   f"{urllib.parse.quote(target['model'], safe='')}/versions/{version}?full=true")
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
            token = self.tokens.get(target["tenant"])
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    profile = self.kernel.Profile.from_dict(json.loads(response.read()))
                ttl = PROFILE_TTL_S
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise ServiceUnreachable(f"baseline of {target['model']} v{version}: HTTP {exc.code}") from exc
                profile, ttl = None, MISSING_TTL_S
            except (urllib.error.URLError, OSError) as exc:
                raise ServiceUnreachable(f"the ml-service at {spec['service_url']} did not answer: {exc}") from exc
            self.profiles[key] = (time.monotonic() + ttl, profile)
            return profile

        # ---- rows -------------------------------------------------------------------------------
        def aggregate(self, records: list[dict[str, Any]], profile: Any, start: int, end: int) -> Any:
            """The rows' aggregate on the baseline's edges, as ``Monitoring._aggregate_rows`` makes it."""
            stats, aggregate = self.stats, self.kernel.window_aggregate
            n = len(records)
            if profile is None:
                return stats.WindowAggregate(start, end, n, {})
            features = {}
            for name, base in profile.features.items():
                values = [r.get("features", {}).get(name) for r in records]
                present = any(name in r.get("features", {}) for r in records)
                features[name] = aggregate(base, values if present else None)
            prediction = None
            if profile.prediction is not None and any("prediction" in r for r in records):
                prediction = aggregate(profile.prediction, [r.get("prediction") for r in records])
            return stats.WindowAggregate(start, end, n, features, prediction, None)

        def process_element(self, row: Any, ctx: Any) -> Any:
            info = self.topics[row.topic]
            key = info["key"]
            records = self.decode(("[" + row.payload.replace("\n", ",") + "]").encode())
            if info["kind"] == "labels":
                self.add_labels(records)
                return
            target = self.targets[key]
            plan = self.plans[key]
            groups: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
            for record in records:
                if record.get("shadow") is True:
                    continue
                version = _version_number(record.get("version"))
                ts = record.get("timestamp")
                if version is None or not isinstance(ts, (int, float)):
                    continue
                for size in plan["direct"]:
                    groups.setdefault((size, int(ts) // size * size, version), []).append(record)
            watermark = ctx.timer_service().current_watermark()
            for (size, start, version), rows in groups.items():
                end = start + size
                if end - 1 <= watermark:
                    continue  # its window has closed: late beyond allowed_lateness
                wkey = f"{size}:{start}"
                parts = self.windows.get(wkey) or {}
                part = parts.setdefault(version, {"agg": None, "pending": [], "preds": [], "rows": 0})
                part["preds"].extend((str(r.get("request_id")), int(r.get("row") or 0), r.get("prediction"))
                                     for r in rows if r.get("prediction") is not None)
                try:
                    profile = self.profile(target, version)
                except ServiceUnreachable:
                    part["pending"].extend(rows)  # aggregated once the baseline can be read
                else:
                    rows = part["pending"] + rows if part["pending"] else rows
                    part["pending"] = []
                    part["agg"] = self.stats.merge(part["agg"], self.aggregate(rows, profile, start, end))
                part["rows"] = (part["agg"].rows if part["agg"] is not None else 0) + len(part["pending"])
                self.windows.put(wkey, parts)
                ctx.timer_service().register_event_time_timer(end - 1)

        def add_labels(self, records: list[dict[str, Any]]) -> None:
            labels = self.labels.value() or {}
            for record in records:
                if record.get("label") is None:
                    continue
                key = (str(record.get("request_id")), int(record.get("row") or 0))
                ts = int(record.get("timestamp") or 0)
                if key not in labels or labels[key][0] <= ts:  # the latest label of a (request, row) wins
                    labels[key] = (ts, record["label"])
            self.labels.update(labels)

        # ---- closing a window -------------------------------------------------------------------
        def on_timer(self, timestamp: int, ctx: Any) -> Any:
            key = ctx.get_current_key()
            target = self.targets[key]
            plan = self.plans[key]
            end = timestamp + 1
            for size, label in plan["sizes"]:
                if end % size:
                    continue
                wkey = f"{size}:{end - size}"
                parts = self.windows.get(wkey)
                if parts is None:
                    continue
                yield from self.close(ctx, target, plan, size, label, end, parts)
                self.windows.remove(wkey)
            labels = self.labels.value()
            if labels:
                horizon = end - plan["largest"] - self.lateness
                kept = {k: v for k, v in labels.items() if v[0] >= horizon}
                if len(kept) != len(labels):
                    self.labels.update(kept)

        def close(self, ctx: Any, target: dict[str, Any], plan: dict[str, Any], size: int, label: str, end: int,
                  parts: dict[int, dict[str, Any]]) -> Any:
            started = time.perf_counter()
            start = end - size
            settings = self.settings[ctx.get_current_key()]
            labels = self.labels.value() or {}
            finals: dict[int, Any] = {}
            results = []
            for version in sorted(parts):
                part = parts[version]
                profile = self.profile(target, version)  # raises ServiceUnreachable: retried after the restart
                agg = part["agg"]
                if part.get("pending"):
                    agg = self.stats.merge(agg, self.aggregate(part["pending"], profile, start, end))
                if agg is None:
                    agg = self.stats.WindowAggregate(start, end, 0, {})
                if not part.get("fed"):
                    agg = self.stats.WindowAggregate(start, end, agg.rows, agg.features, agg.prediction,
                                                     self.performance(part["preds"], labels, profile))
                finals[version] = agg
                try:
                    result = self.kernel.compare_window(agg, profile, settings, version=version)
                except Exception as exc:  # a test only a plugin has: reported, not guessed
                    result = {"version": version, "rows": agg.rows, "status": "unknown", "features": [],
                              "data_drift": None, "concept_drift": None, "performance": None,
                              "notes": [f"not compared in the Flink job: {getattr(exc, 'message', exc)}"]}
                results.append(result)
            for bigger in plan["fed_by"].get(size, ()):
                self.feed(ctx, bigger, end, finals)
            report = self.kernel.window_report(tenant=target["tenant"], deployment=target["deployment"],
                                               model=target["model"], window=label, start=start, end=end,
                                               aligned=True, versions=results, started=started)
            report["runner"] = "flink"
            ordered = report["versions"]
            watermark = ctx.timer_service().current_watermark()
            for i, result in enumerate(ordered):
                rkey = f"{target['tenant']}/{target['deployment']}/{label}/{end}/v{result['version']}"
                if rkey in self.skip:
                    continue
                record = {"key": rkey, "tenant": target["tenant"], "deployment": target["deployment"],
                          "model": target["model"], "window": label, "start": start, "end": end,
                          "version": result["version"], "index": i, "count": len(ordered), "result": result,
                          "emitted_at": int(time.time() * 1000), "watermark": watermark}
                if i == len(ordered) - 1:
                    record["report"] = report
                for feature in result.get("features") or ():
                    if feature.get("drifted"):
                        yield alerts_tag, json.dumps(
                            {"key": f"{rkey}/{feature['feature']}", "tenant": target["tenant"],
                             "deployment": target["deployment"], "model": target["model"],
                             "version": result["version"], "window": label, "start": start, "end": end,
                             "feature": feature["feature"], "test": feature.get("test"),
                             "statistic": feature.get("statistic"), "p_value": feature.get("p_value"),
                             "threshold": feature.get("threshold"), "timestamp": record["emitted_at"]},
                            default=_plain, allow_nan=False)
                yield json.dumps(record, default=_plain, allow_nan=False)

        def performance(self, preds: list[tuple[str, int, Any]], labels: dict, profile: Any) -> Any:
            """The labelled rows' performance, as ``Monitoring._aggregate_rows`` computes it."""
            pairs = [(labels[(rid, row)][1], pred) for rid, row, pred in preds if (rid, row) in labels]
            if not pairs or profile is None:
                return None
            truth = [p[0] for p in pairs]
            task = profile.task or self.kernel.label_task(truth)
            return self.stats.PerformanceAggregate.of(task, truth, [p[1] for p in pairs])

        def feed(self, ctx: Any, size: int, end: int, finals: dict[int, Any]) -> None:
            """Merge a closed window's aggregates into the larger window it tiles."""
            start = (end - 1) // size * size
            wkey = f"{size}:{start}"
            parts = self.windows.get(wkey) or {}
            for version, agg in finals.items():
                part = parts.setdefault(version, {"agg": None, "pending": [], "preds": [], "rows": 0, "fed": True})
                part["agg"] = self.stats.merge(part["agg"], agg)
                part["rows"] = part["agg"].rows
            self.windows.put(wkey, parts)
            ctx.timer_service().register_event_time_timer(start + size - 1)

    return DriftWindows(), alerts_tag


def _window_plan(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which window sizes take rows and which are merged from a smaller one that tiles them (the largest)."""
    sizes = sorted({int(w["size_ms"]): w["label"] for w in windows}.items())
    fed_by: dict[int, list[int]] = {}
    direct = []
    for size, _ in sizes:
        tiles = [s for s, _ in sizes if s < size and size % s == 0]
        if tiles:
            fed_by.setdefault(max(tiles), []).append(size)
        else:
            direct.append(size)
    return {"sizes": sizes, "direct": direct, "fed_by": fed_by, "largest": max(s for s, _ in sizes)}


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def build(spec: dict[str, Any]) -> Any:
    """The job graph of a spec on a fresh environment; returns the environment to execute."""
    from pyflink.common import Types
    from pyflink.table import StreamTableEnvironment

    env = environment(spec)
    t_env = StreamTableEnvironment.create(env)
    topics = list(spec["topics"]) + [spec["clock_topic"]]
    source_table(t_env, spec, "logs", topics, int(spec["lateness_ms"]))
    clock = spec["clock_topic"].replace("'", "''")
    batches = t_env.sql_query(f"""
        SELECT topic, window_time AS rowtime, LISTAGG(`value`, U&'\\000A') AS payload
        FROM TABLE(TUMBLE(TABLE logs, DESCRIPTOR(ts), {interval(int(spec.get("micro_batch_ms", 1000)))}))
        WHERE topic <> '{clock}'
        GROUP BY topic, window_start, window_end, window_time""")
    keys = {topic: info["key"] for topic, info in spec["topics"].items()}
    function, alerts_tag = make_function(spec)
    results = (t_env.to_data_stream(batches)
               .key_by(lambda row: keys[row.topic], key_type=Types.STRING())
               .process(function, output_type=Types.STRING()).uid("drift-windows").name("drift windows"))
    results.sink_to(kafka_sink(spec, spec["results_topic"])).uid("drift-results").name("drift.results")
    results.get_side_output(alerts_tag).sink_to(kafka_sink(spec, spec["alerts_topic"])).uid("drift-alerts") \
        .name("drift.alerts")
    return env


def main(argv: list[str]) -> int:
    spec = read_spec(argv[1])
    build(spec).execute(spec["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
