"""The streaming-inference job: a deployment's requests topic answered by its models embedded in the job.

``python -m matih_flink.job.predict_job SPEC.json`` in the Flink environment (:mod:`matih_flink.streaming`
starts it). The spec carries a :class:`~matih_lite.contracts.stream_jobs.StreamJobPlan` as data: topics,
the routes as of the job's start, and each routed version's verified model folder and flavor.

1. **Source** (Flink SQL, Java): the requests topic from the group's committed offsets (checkpointed), each
   message's partition and offset kept (the prediction's ``source_offset``, as the events backend numbers it).
2. **Answer** (a broadcast process function, Python): each request is routed as the service routes it: by its
   ``request_key``'s sticky bucket (:func:`~matih_lite.contracts.stream_jobs.sticky_bucket`, the service
   router's own hash) over the routes' bucket bounds, at random without a key; the variant's model predicts
   it: ONNX in onnxruntime, any other flavor through the flavor class the service loads it with
   (:attr:`~matih_lite.contracts.stream_jobs.StreamRoute.loader`), from its verified folder (every file's
   sha256 checked first for flavors whose loading runs code); each loaded once per worker.
   **Route changes** arrive on the control topic (broadcast to every worker): a record for this job's group
   with a newer ``revision`` replaces the routes at once, no restart; older ones (replayed from the topic's
   start) are ignored, since a (re)started job begins with the routes of its spec.
3. **Sinks**: the prediction record, in the shape the in-process consumer writes
   (:mod:`matih_lite.serving.streaming`), to the sink topic; one inference-log record per input row (the
   schema of :mod:`matih_lite.serving.inference_log`) to the deployment's inference log, as an HTTP
   prediction is logged. A request that cannot be answered gets an ``error`` record, as in-process.
"""

from __future__ import annotations

import bisect
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from matih_flink.job.common import environment, kafka_sink, read_spec

ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool"}


class Refused(ValueError):
    """A request the model cannot take: answered with an ``error`` record."""


class FlavorModel:
    """A non-ONNX version through its flavor's own ``load`` (the predictor the in-process backend calls)."""

    def __init__(self, route: dict[str, Any]) -> None:

        import numpy as np

        from matih_lite.contracts.flavors import LoadOptions, resolve_reference, verify_copy

        self.np = np
        reference = route.get("loader") or ""
        try:
            flavor: Any = resolve_reference(reference)
        except ValueError:
            raise Refused(f"version {route['version']} ({route['flavor']}) names no flavor class to load it with") \
                from None
        except (ImportError, AttributeError) as exc:
            raise Refused(f"the {route['flavor']!r} flavor ({reference}) cannot be imported in the Flink "
                          f"environment: {exc}") from None
        folder = Path(route["model_dir"])
        if getattr(flavor, "needs_trusted_source", True):
            verify_copy(folder)  # its loading runs code: only the files the registry recorded
        self.predictor = flavor().load(folder, LoadOptions())
        schema = self.predictor.input_schema
        self.columns = [s.name for s in schema.specs] if schema.kind == "columns" else []
        kinds = {s.dtype for s in schema.specs}
        self.dtype = next(iter(kinds)) if len(kinds) == 1 and next(iter(kinds)) not in ("str", "bytes",
                                                                                           "object") else None
        self.mixed = schema.kind == "columns" and len(kinds) > 1

    def predict(self, rows: Any, columns: list[str] | None = None) -> Any:
        np = self.np
        rows = [r if isinstance(r, list) else [r] for r in rows]
        if columns and self.columns and columns != self.columns:
            missing = [c for c in self.columns if c not in columns]
            if missing:
                raise Refused(f"the request lacks the model's columns {missing}")
            at = [columns.index(c) for c in self.columns]
            rows = [[r[i] for i in at] for r in rows]
        self.fed = np.asarray(rows, dtype=object)
        try:
            if self.mixed:
                inputs: Any = {c: np.asarray([r[i] for r in rows]) for i, c in enumerate(self.columns)}
            else:
                inputs = np.asarray(rows, dtype=self.dtype or "float64")
        except (TypeError, ValueError, IndexError) as exc:
            raise Refused(f"the inputs do not fit the model's schema: {exc}") from None
        try:
            return self.predictor.predict(inputs)
        except Exception as exc:  # the flavor's InvalidInput (the caller's fault), or the model failing on it
            raise Refused(f"the model refused these inputs: {getattr(exc, 'message', exc)}") from None


class OnnxModel:
    """One version's ``model.onnx`` in an onnxruntime session (one intra-op thread, as the service's)."""

    def __init__(self, folder: str) -> None:
        import numpy as np
        import onnxruntime as ort

        self.np = np
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = Path(folder) / "model.onnx"
        if not path.is_file():
            found = sorted(Path(folder).glob("**/*.onnx"))
            if not found:
                raise FileNotFoundError(f"no model.onnx in {folder}")
            path = found[0]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, ONNX_TYPES.get(i.type)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self.refused = InvalidArgument

    def predict(self, rows: Any, columns: list[str] | None = None) -> Any:
        np = self.np
        if len(self.inputs) != 1:
            raise Refused(f"the model takes {len(self.inputs)} inputs; the Flink job feeds one-tensor models only")
        name, dtype = self.inputs[0]
        if dtype is None:
            raise Refused(f"input {name!r} is not a numeric tensor")
        try:
            arr = np.asarray(rows, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise Refused(f"input {name!r} takes {dtype} numbers: {exc}") from None
        self.fed = arr  # what the inference log records as the row's features, as the service logs them
        try:
            results = self.session.run(self.outputs, {name: arr})
        except self.refused as exc:
            raise Refused(f"the model refused these inputs: {str(exc).split(' : ', 2)[-1].strip()}") from None
        outputs = {n: _as_array(np, v) for n, v in zip(self.outputs, results)}
        return outputs[self.outputs[0]] if len(outputs) == 1 else outputs


def _as_array(np: Any, value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0])
        return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def rows_of(record: dict[str, Any]) -> tuple[list[Any], list[str] | None]:
    """The input rows of a request record (``inputs``, ``instances``, ``dataframe_split``, ``dataframe_records``)
    and the column names it gives them (None when it names none)."""
    columns = None
    if "inputs" in record:
        rows = record["inputs"]
    elif "instances" in record:
        rows = record["instances"]
    elif "dataframe_split" in record and isinstance(record["dataframe_split"], dict):
        rows = record["dataframe_split"].get("data")
        found = record["dataframe_split"].get("columns")
        columns = [str(c) for c in found] if isinstance(found, list) else None
    elif "dataframe_records" in record and isinstance(record["dataframe_records"], list):
        first = record["dataframe_records"][0] if record["dataframe_records"] else None
        columns = [str(c) for c in first] if isinstance(first, dict) else None
        rows = [[r.get(c) for c in columns] if isinstance(r, dict) and columns else r
                for r in record["dataframe_records"]]
    else:
        raise Refused("a request needs one of dataframe_split, dataframe_records, instances or inputs")
    if not isinstance(rows, list) or not rows:
        raise Refused("the request's inputs must be a non-empty list of rows")
    return rows, columns


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def log_records(plan: dict[str, Any], route: dict[str, Any], request_id: str, rows: list[Any], outputs: Any,
                latency_ms: float, at: int, shadow: bool = False) -> list[dict[str, Any]]:
    """The inference-log records of one answered request (or of a shadow's answer to it): one per input row."""
    names = list(route.get("feature_names") or ())
    primary = outputs[next(iter(outputs))] if isinstance(outputs, dict) else outputs
    out = []
    for i, row in enumerate(rows):
        values = row if isinstance(row, list) else [row]
        features = {(names[j] if j < len(names) else f"f{j}"): v for j, v in enumerate(values)
                    if isinstance(v, (int, float, str, bool))}
        record = {"timestamp": at, "request_id": request_id, "row": i, "deployment": plan["log_name"],
                  "variant": route["variant"], "version": str(route["version"]), "latency_ms": latency_ms,
                  "shadow": shadow, "features": features}
        try:
            value = primary[i]
            value = value.tolist() if hasattr(value, "tolist") else value
            while isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, (int, float, str, bool)):
                record["prediction"] = value
        except (IndexError, TypeError, KeyError):
            pass
        out.append(record)
    return out


def make_function(spec: dict[str, Any]) -> Any:
    from pyflink.common import Types
    from pyflink.datastream import OutputTag
    from pyflink.datastream.functions import BroadcastProcessFunction

    log_tag = OutputTag("inference-log", Types.STRING())

    class Answer(BroadcastProcessFunction):
        def open(self, runtime_context: Any) -> None:
            import msgspec

            from matih_lite.contracts.stream_jobs import sticky_bucket

            self.decode = msgspec.json.decode  # several times json's speed: this is the job's hot path
            self.encode = msgspec.json.Encoder().encode

            self.bucket = sticky_bucket
            self.plan = spec["plan"]
            self.revision = int(self.plan.get("revision") or 0)
            self.use(self.plan["routes"], spec["bounds"], self.plan.get("shadows") or [])
            self.models: dict[int, Any] = {}
            self.partitions = int(spec.get("partitions", 1))
            self.answered_through = int(spec.get("answered_through", -1))
            metrics = runtime_context.get_metrics_group()
            self.counters = {name: metrics.counter(f"matih_{name}") for name in ("consumed", "predicted", "failed",
                                                                                  "shadowed", "shadow_failed")}

        def use(self, routes: list[dict[str, Any]], bounds: list[int], shadows: list[dict[str, Any]]) -> None:
            self.routes = [r for r in routes if r["weight"] > 0]
            self.bounds = bounds
            self.shadows = list(shadows)

        def model(self, route: dict[str, Any]) -> Any:
            found = self.models.get(route["version"])
            if found is None:
                try:
                    found = OnnxModel(route["model_dir"]) if route["flavor"] == "onnx" else FlavorModel(route)
                except Refused:
                    raise
                except Exception as exc:  # files changed since verified, a flavor failing to load: say which
                    raise Refused(f"version {route['version']} cannot be loaded: {type(exc).__name__}: {exc}") \
                        from None
                self.models[route["version"]] = found
            return found

        def choose(self, key: str | None) -> dict[str, Any]:
            if len(self.routes) == 1:
                return self.routes[0]
            b = self.bucket(self.plan["deployment"], key) if key is not None else random.randrange(10_000)
            return self.routes[bisect.bisect_right(self.bounds, b)]

        def process_broadcast_element(self, row: Any, ctx: Any) -> Any:
            try:
                change = json.loads(row.value)
            except ValueError:
                return
            if not isinstance(change, dict) or change.get("group") != self.plan["group"]:
                return
            revision = int(change.get("revision") or 0)
            if revision <= self.revision or not change.get("routes"):
                return  # replayed from before this job's spec (or a later one applied already)
            self.revision = revision
            self.use(change["routes"], change["bounds"], change.get("shadows") or [])
            print(f"matih: routes of {self.plan['deployment']} changed to "
                  f"{[(r['variant'], r['weight']) for r in self.routes]}, shadows "
                  f"{[r['variant'] for r in self.shadows]} (revision {revision})")

        def process_element(self, row: Any, ctx: Any) -> Any:
            plan = self.plan
            offset = int(row.offset) * self.partitions + int(row.part)
            if offset <= self.answered_through:
                return  # answered before a restart from an older checkpoint: in the sink already
            self.counters["consumed"].inc()
            try:
                record = self.decode(row.value)
            except ValueError:  # msgspec's DecodeError is one
                record = None
            request_id = None
            answer: dict[str, Any]
            if isinstance(record, dict):
                rid = record.get("request_id")
                request_id = str(rid) if rid not in (None, "") else None
            label = plan.get("source_label") or plan["source"]
            out = {"request_id": request_id or f"{label}:{offset}", "source": label, "source_offset": offset,
                   "consumer": plan["group"]}
            try:
                if not isinstance(record, dict):
                    raise Refused("a request record must be a JSON object")
                key = record.get("request_key")
                if key is not None and (not isinstance(key, str) or not key or len(key) > 1024):
                    raise Refused("request_key must be a string of 1 to 1024 characters")
                route = self.choose(key)
                rows, columns = rows_of(record)
                start = time.perf_counter()
                model = self.model(route)
                outputs = model.predict(rows, columns)
                latency = (time.perf_counter() - start) * 1000
                at = int(time.time() * 1000)
                answer = {"predictions": plain(outputs), "deployment": plan["deployment"],
                          "version": route["version"], "variant": route["variant"]}
                logged_id = request_id or f"flink-{plan['deployment']}-{offset}"
                for entry in log_records(plan, route, logged_id, model.fed.tolist(), outputs, latency, at):
                    yield log_tag, self.encode(entry).decode()
                self.counters["predicted"].inc()
            except Refused as exc:
                answer, at = {"error": str(exc)[:2000]}, int(time.time() * 1000)
                self.counters["failed"].inc()
            yield self.encode({"timestamp": at, **out, **answer}).decode()
            if "error" in answer:
                return
            # A copy of the answered request to each shadow, after its answer: logged as the shadow's, never
            # written to the sink; a shadow fails nothing but itself.
            for shadow in self.shadows:
                try:
                    start = time.perf_counter()
                    shadow_model = self.model(shadow)
                    shadow_outputs = shadow_model.predict(rows, columns)
                    latency = (time.perf_counter() - start) * 1000
                    for entry in log_records(plan, shadow, logged_id, shadow_model.fed.tolist(), shadow_outputs,
                                             latency, int(time.time() * 1000), shadow=True):
                        yield log_tag, self.encode(entry).decode()
                    self.counters["shadowed"].inc()
                except Exception as exc:  # whatever a shadow raises is its own failure
                    self.counters["shadow_failed"].inc()
                    print(f"matih: shadow v{shadow['version']} of {plan['deployment']} failed: "
                          f"{type(exc).__name__}: {exc}"[:500])

    return Answer(), log_tag


def build(spec: dict[str, Any]) -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor
    from pyflink.table import StreamTableEnvironment

    env = environment(spec)
    t_env = StreamTableEnvironment.create(env)
    options = {
        "connector": "kafka", "topic": spec["source_topic"], "properties.bootstrap.servers": spec["bootstrap_servers"],
        "properties.group.id": spec["group"], "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": spec.get("start_from", "earliest"), "format": "raw",
        "properties.max.partition.fetch.bytes": str(16 * 1024 * 1024),
        "properties.fetch.max.wait.ms": str(int(spec.get("fetch_wait_ms", 500))),
    }
    with_ = ", ".join(f"'{k}' = '{v}'" for k, v in options.items())
    t_env.execute_sql(f"""
        CREATE TABLE requests (
          part INT METADATA FROM 'partition' VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `value` STRING
        ) WITH ({with_})""")
    control = {**options, "topic": spec["control_topic"], "scan.startup.mode": "earliest-offset",
               "properties.group.id": spec["group"] + ".control"}
    t_env.execute_sql(f"""
        CREATE TABLE control (`value` STRING) WITH ({", ".join(f"'{k}' = '{v}'" for k, v in control.items())})""")
    table = t_env.sql_query("SELECT part, `offset`, `value` FROM requests")
    changes = t_env.to_data_stream(t_env.sql_query("SELECT `value` FROM control"))
    routes = MapStateDescriptor("routes", Types.STRING(), Types.STRING())
    function, log_tag = make_function(spec)
    answers = (t_env.to_data_stream(table).connect(changes.broadcast(routes))
               .process(function, output_type=Types.STRING()).uid("answer").name("answer"))
    answers.sink_to(kafka_sink(spec, spec["sink_topic"])).uid("predictions").name("predictions")
    answers.get_side_output(log_tag).sink_to(kafka_sink(spec, spec["log_topic"])).uid("inference-log") \
        .name("inference log")
    return env


def main(argv: list[str]) -> int:
    spec = read_spec(argv[1])
    build(spec).execute(spec["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
