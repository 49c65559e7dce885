"""Drift monitoring written once, whatever runs it: baselines, windows, checks and the actions they take.

:class:`Monitoring` over a host:

- **Baselines** (:meth:`Monitoring.build_baseline`): a version's training data profiled
  (:mod:`~matih_lite.monitoring.profile`), stored as ``<tenant>/_drift/<model>/v<version>/baseline.json``
  in the artifacts slot, referenced by the version tag ``matih.drift.baseline``.
- **Windows** over the inference log (:func:`matih_lite.serving.inference_log.read_window`):
  the rows a deployment answered in ``[start, end)``, grouped by the version that answered,
  each summarized on its own baseline's edges (:class:`~matih_lite.monitoring.stats.WindowAggregate`).
  The scheduler's windows are tumbling (aligned to the window size); hourly aggregates it
  computed are merged into the daily one instead of reading the day again.
- **Checks** (:meth:`Monitoring.check`): per version, feature drift (every feature's test,
  statistic and verdict, drifting features first), data drift (the share of drifting features
  against ``drift_share``), concept drift (the prediction distribution against the baseline's)
  and performance drift (metrics of the rows labelled since, against the baseline's, with the
  number of labelled rows).
- **Actions**, each switched in ``[drift]``: an alert to the notifiers (``drift.detected``;
  one per (model, feature, window), never twice), the version's health in the registry (tags
  ``matih.health`` and ``matih.health.detail``, which the model card shows), a retraining job
  through the compute slot (when one is configured and ``[models.NAME] retrain_spec`` names a
  job spec), and a rollback of the deployment when performance drift crosses its threshold.

Settings live in ``[drift]`` of matih.toml (see :class:`DriftSettings`); ``[drift.models.NAME]``
overrides them for one model and ``[drift.features.NAME]`` picks one feature's test and threshold.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.clock import now_ms
from matih_lite.errors import InvalidInput, MatihError, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.monitoring import stats
from matih_lite.monitoring.actions import DriftActions
from matih_lite.monitoring.profile import BASELINE_TAG, Profile, aggregate_features, build_profile, window_aggregate
from matih_lite.monitoring.settings import (
    MONITOR_USER,
    DriftSettings,
    drift_settings,
    format_duration,
    parse_duration,
    segment,
)
from matih_lite.monitoring.window import REPORT_SCHEMA, compare_window, window_report  # noqa: F401

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.monitoring")

MAX_CACHED_WINDOWS = 64
"""Aggregated windows kept per deployment for merging (a day of hours, and then some)."""


# ---- the domain service -------------------------------------------------------------------------------
class Monitoring:
    """Baselines, windowed drift checks and their actions for one platform (a :class:`~matih_lite.host.Host`).

    ``window_source(deployment, start, end)`` returns the inference-log window (an object with a
    pyarrow ``table``); by default :func:`~matih_lite.serving.inference_log.read_window` over the
    events slot. Keep one instance to reuse loaded baselines and computed window aggregates.
    """

    def __init__(self, host: Host, *, window_source: Any = None) -> None:
        from matih_lite.registry import Registry

        self.host = host
        self.registry = Registry(host)
        self._window_source = window_source
        self._profiles: OrderedDict[tuple[str, str], Profile] = OrderedDict()
        self._windows: OrderedDict[tuple, tuple[stats.WindowAggregate, Profile]] = OrderedDict()
        self._spans: dict[tuple[str, str, int], set[int]] = {}
        """Starts of the aligned windows aggregated so far (with or without rows), per window size."""
        self._lock = threading.RLock()
        self.actions = DriftActions(self)

    @property
    def artifacts(self) -> Any:
        return self.host.artifacts

    def settings(self, model: str | None = None) -> DriftSettings:
        return drift_settings(self.host.config, model)

    def tests(self) -> dict[str, Any]:
        """Every drift test the plugins contribute, by name."""
        return self.host.registry("register_drift_tests")

    # ---- baselines ------------------------------------------------------------------------------
    def build_baseline(self, principal: Principal, name: str, version: int | str, data: Any = None, *,
                       target: str | None = None, prediction: Any = None, features: Sequence[str] | None = None,
                       task: str | None = None, predict: bool = True,
                       source: Mapping[str, Any] | None = None) -> Profile:
        """Profile ``data`` (the version's training set) as the version's baseline, store it, tag the version.

        ``data`` is a DataFrame, a pyarrow Table, ``{column: values}`` or a Parquet/CSV path; with
        ``None`` the version's own training-data reference is read when it is a local file.
        ``prediction`` is a column or the predictions; without one (and with ``predict``) the
        version's model is loaded and run on the features. Metrics come from ``target`` and the
        predictions, else from the version's model-card evaluation or its run. Returns the profile.
        """
        mv = self.registry.get_version(principal, name, version)
        settings = self.settings(name)
        if data is None:
            data, source = self._training_data_file(mv)
        from matih_lite.monitoring.profile import columns_of

        columns = columns_of(data)
        notes = []
        kinds = {k: fs.kind for k, fs in settings.features.items() if fs.kind}
        chosen = list(features) if features else None
        if prediction is None and predict:
            prediction, why = self._predict(principal, mv, columns, chosen, target)
            if why:
                notes.append(why)
        metrics, metrics_source = ({}, "")
        if target is None or prediction is None:
            metrics, metrics_source = self._known_metrics(principal, mv)
        profile = build_profile(columns, model=name, version=mv.version, features=chosen, target=target,
                                prediction=prediction, kinds=kinds, task=task, metrics=metrics,
                                metrics_source=metrics_source, bins=settings.bins, coarse_bins=settings.coarse_bins,
                                sample_cap=settings.sample_cap, max_categories=settings.max_categories,
                                created_by=principal.user, source=source)
        profile.notes[:0] = notes
        rel = f"_drift/{segment(name)}/v{mv.version}/baseline.json"
        self.artifacts.put(f"{principal.tenant}/{rel}", profile.to_json())
        self.registry.update_version(principal, name, mv.version, tags={BASELINE_TAG: rel})
        with self._lock:
            self._profiles[(principal.tenant, rel)] = profile
        self.host.emit(PlatformEvent("drift.baseline.built", f"{name}/{mv.version}", principal.tenant,
                                     {"name": name, "version": mv.version, "rows": profile.rows,
                                      "features": len(profile.features), "artifact": rel}))
        return profile

    def baseline(self, principal: Principal, name: str, version: int | str) -> Profile:
        """The stored baseline of a version. Raises NotFound (with the command that builds one)."""
        mv = self.registry.get_version(principal, name, version)
        found = self._baseline_of(principal.tenant, mv)
        if found is None:
            raise NotFound(f"version {mv.version} of model {name!r} has no drift baseline; build one with "
                           f"'matih-lite models baseline {name} {mv.version} --data train.parquet'")
        return found

    def _baseline_of(self, tenant: str, mv: Any) -> Profile | None:
        rel = mv.tags.get(BASELINE_TAG)
        if not rel:
            return None
        try:
            rel = clean_path(rel)
        except InvalidInput:
            return None
        if not rel.startswith("_drift/"):
            return None
        key = (tenant, rel)
        with self._lock:
            if key in self._profiles:
                self._profiles.move_to_end(key)
                return self._profiles[key]
        try:
            profile = Profile.from_json(self.artifacts.get(f"{tenant}/{rel}"))
        except NotFound:
            return None
        with self._lock:
            self._profiles[key] = profile
            while len(self._profiles) > 32:
                self._profiles.popitem(last=False)
        return profile

    def _training_data_file(self, mv: Any) -> tuple[str, dict[str, Any]]:
        from pathlib import Path

        for ref in mv.training_data:
            uri = str(ref.get("uri", ""))
            path = uri[len("file://"):] if uri.startswith("file://") else uri
            if path and "://" not in path and Path(path).is_file():
                return path, {k: v for k, v in ref.items() if isinstance(v, (str, int, float))}
        raise InvalidInput(f"version {mv.version} of model {mv.name!r} has no training data in a local file "
                           "this process can read; give the data (--data train.parquet)")

    def _predict(self, principal: Principal, mv: Any, columns: Mapping[str, Any], features: Sequence[str] | None,
                 target: str | None) -> tuple[Any, str]:
        """The version's predictions on the training features, or (None, why not)."""
        try:
            from matih_lite.monitoring.profile import META_COLUMNS, numeric_values
            from matih_lite.serving import resolve_flavor
            from matih_lite.serving.materialize import materialize

            folder = materialize(self.host, principal.tenant, mv)
            predictor = resolve_flavor(self.host, mv.flavor, folder).load(folder)
            schema = getattr(predictor, "input_schema", None)
            names = list(getattr(schema, "names", []) or []) if getattr(schema, "kind", "") == "columns" else []
            if not names:  # one unnamed tensor (or nothing known): the feature columns, in their order
                names = list(features) if features else [c for c in columns if c != target and c not in META_COLUMNS]
            missing = [n for n in names if n not in columns]
            if missing:
                return None, f"predictions not computed: the data lacks model input {missing[0]!r}"
            if all(getattr(s, "numeric", True) for s in getattr(schema, "specs", ())):
                inputs: Any = np.column_stack([numeric_values(columns[n]) for n in names])
            else:
                inputs = {n: np.asarray(columns[n]) for n in names}
            outputs = predictor.predict(inputs)
            if isinstance(outputs, Mapping):
                outputs = next(iter(outputs.values()))
            out = np.asarray(outputs)
            if out.ndim > 1:
                out = out[:, 0] if out.shape[1] == 1 else None
            if out is None:
                return None, "predictions not computed: the model's primary output is not one value per row"
            return out, ""
        except Exception as exc:  # a baseline without predictions is still a baseline
            return None, (f"predictions not computed ({type(exc).__name__}: {getattr(exc, 'message', exc)}); "
                          "give the prediction column to profile the prediction distribution")

    def _known_metrics(self, principal: Principal, mv: Any) -> tuple[dict[str, float], str]:
        """The version's metrics from its latest model-card evaluation, else from its run."""
        try:
            from matih_lite.registry.cards import ModelCards

            ev = ModelCards(self.host).evaluation(principal, mv.name, mv.version, mv=mv)
            if ev and isinstance(ev.get("metrics"), Mapping):
                found = {k: float(v["value"]) for k, v in ev["metrics"].items()
                         if isinstance(v, Mapping) and isinstance(v.get("value"), (int, float))}
                if found:
                    return found, "model card evaluation"
        except MatihError:
            pass
        if mv.run_id:
            try:
                run = self.registry.tracking.get_run(principal.tenant, mv.run_id)
                found = {k: m.value for k, m in run.metrics.items() if k in ("accuracy", "rmse", "mae", "f1", "r2")}
                if found:
                    return found, f"run {mv.run_id}"
            except NotFound:
                pass
        return {}, ""

    # ---- windows --------------------------------------------------------------------------------
    def read_window(self, tenant: str, deployment: str, start: int, end: int) -> Any:
        """The inference-log window of a deployment: through the service's traffic manager when it has
        one (so requests still queued are written first), else straight from the events slot."""
        if self._window_source is not None:
            return self._window_source(deployment, start, end)
        from matih_lite.serving.inference_log import read_window
        from matih_lite.serving.traffic import MANAGER, inference_log_name

        stream = inference_log_name(tenant, deployment)
        manager = self.host.pm.get_plugin(MANAGER)
        log_ = getattr(manager, "inference_log", None) if manager is not None else None
        if log_ is not None:
            return log_.window(stream, start, end)
        return read_window(self.host.backend("events"), stream, start, end)

    def aggregate(self, principal: Principal, deployment: Any, start: int, end: int, *,
                  size: int | None = None) -> dict[int, tuple[stats.WindowAggregate, Profile | None]]:
        """Each version's aggregate of the window ``[start, end)`` of a deployment, with its baseline.

        A window covered by windows this instance aggregated before (hourly ones for a day) is
        merged from them; otherwise the inference log is read once.
        """
        merged = self._merged(principal.tenant, deployment.name, start, end, size)
        if merged is not None:
            return merged
        window = self.read_window(principal.tenant, deployment.name, start, end)
        table = window.table
        out: dict[int, tuple[stats.WindowAggregate, Profile | None]] = {}
        if size is not None:
            with self._lock:
                spans = self._spans.setdefault((principal.tenant, deployment.name, end - start), set())
                spans.add(start)
                while len(spans) > MAX_CACHED_WINDOWS:
                    spans.discard(min(spans))
        if table.num_rows == 0:
            return out
        import pyarrow.compute as pc

        column = table.column("version")
        found = [v for v in pc.unique(column).to_pylist() if v is not None]
        for text in sorted(found, key=_version_order):
            try:
                number = int(str(text).lstrip("vV"))
            except ValueError:
                continue
            rows = table if len(found) == 1 and column.null_count == 0 else table.filter(pc.equal(column, text))
            try:
                mv = self.registry.get_version(principal, deployment.model, number)
                profile = self._baseline_of(principal.tenant, mv)
            except NotFound:
                profile = None
            agg = self._aggregate_rows(rows, profile, start, end)
            out[number] = (agg, profile)
            if size is not None:
                self._remember(principal.tenant, deployment.name, number, profile, start, end, agg)
        return out

    def _aggregate_rows(self, rows: Any, profile: Profile | None, start: int, end: int) -> stats.WindowAggregate:
        n = rows.num_rows
        if profile is None:
            return stats.WindowAggregate(start, end, n, {})
        names = set(rows.column_names)
        features = aggregate_features(profile.features, lambda name: rows.column(f"features.{name}")
                                      if f"features.{name}" in names else None, n)
        prediction = None
        if profile.prediction is not None and "prediction" in names:
            prediction = window_aggregate(profile.prediction, rows.column("prediction"))
        performance = None
        if "label" in names and "prediction" in names:
            import pyarrow.compute as pc

            labelled = rows.filter(pc.and_(pc.is_valid(rows.column("label")), pc.is_valid(rows.column("prediction"))))
            if labelled.num_rows:
                task = profile.task or ("regression" if _is_float(labelled.column("label")) else "classification")
                labels = labelled.column("label").to_pylist()
                preds = labelled.column("prediction").to_pylist()
                performance = stats.PerformanceAggregate.of(task, labels, preds)
        return stats.WindowAggregate(start, end, n, features, prediction, performance)

    def _remember(self, tenant: str, deployment: str, version: int, profile: Profile | None, start: int, end: int,
                  agg: stats.WindowAggregate) -> None:
        key = (tenant, deployment, version, profile.model if profile else None,
               profile.created_at if profile else None, start, end)
        with self._lock:
            self._windows[key] = (agg, profile)
            mine = [k for k in self._windows if k[0] == tenant and k[1] == deployment]
            for old in mine[:max(0, len(mine) - MAX_CACHED_WINDOWS)]:
                del self._windows[old]

    def _merged(self, tenant: str, deployment: str, start: int, end: int,
                size: int | None) -> dict[int, tuple[stats.WindowAggregate, Profile | None]] | None:
        """The window merged from smaller windows aggregated before that tile it exactly, or None."""
        if size is None:
            return None
        with self._lock:
            steps = [step for (t, dep, step), spans in self._spans.items()
                     if t == tenant and dep == deployment and step < end - start and (end - start) % step == 0
                     and start % step == 0 and set(range(start, end, step)) <= spans]
            if not steps:
                return None
            step = max(steps)
            cached = [(k, v) for k, v in self._windows.items() if k[0] == tenant and k[1] == deployment
                      and start <= k[5] and k[6] <= end and k[6] - k[5] == step]
        expected = set(range(start, end, step))
        by_version: dict[int, list[tuple[tuple, stats.WindowAggregate, Profile]]] = {}
        for key, (agg, profile) in cached:
            by_version.setdefault(key[2], []).append((key, agg, profile))
        out: dict[int, tuple[stats.WindowAggregate, Profile | None]] = {}
        covered: set[int] = set()
        for version, parts in by_version.items():
            if len({(k[3], k[4]) for k, _, _ in parts}) != 1 or parts[0][2] is None:
                return None  # no baseline, or a new one, within the window: read the log instead
            total = None
            for key, agg, _ in sorted(parts, key=lambda p: p[0][5]):
                total = stats.merge(total, agg)
                covered.add(key[5])
            out[version] = (stats.WindowAggregate(start, end, total.rows, total.features, total.prediction,
                                                  total.performance), parts[0][2])
        # Every sub-window was aggregated (``_spans``); those without requests left no aggregate.
        if not covered <= expected:
            return None
        return out

    # ---- checks ---------------------------------------------------------------------------------
    def check(self, principal: Principal, deployment: str, window: Any = "1h", *, end: int | None = None,
              aligned: bool = False, act: bool = True) -> dict[str, Any]:
        """Check one window of a deployment and (with ``act``) take the configured actions; returns the report.

        The window is ``[end - size, end)``; ``end`` defaults to now. ``aligned`` rounds ``end``
        down to a multiple of the size (the scheduler's tumbling windows).
        """
        report, _, d, settings = self._evaluate(principal, deployment, window, end, aligned)
        if act:
            report["actions"] = self.actions.act(principal, d, report, settings)
            self._store_report(principal.tenant, report)
        return report

    def _evaluate(self, principal: Principal, deployment: str, window: Any, end: int | None,
                  aligned: bool) -> tuple[dict[str, Any], dict, Any, DriftSettings]:
        from matih_lite.serving.deployments import Deployments

        size = parse_duration(window)
        d = Deployments(self.host).get(principal, deployment)
        settings = self.settings(d.model)
        end = now_ms() if end is None else int(end)
        if aligned:
            end = end // size * size
        start = end - size
        started = time.perf_counter()
        parts = self.aggregate(principal, d, start, end, size=size if aligned else None)
        tests = self.tests()
        versions = [self.compare(agg, profile, settings, tests, number) for number, (agg, profile) in parts.items()]
        versions.sort(key=lambda v: -v["rows"])
        report = window_report(tenant=principal.tenant, deployment=d.name, model=d.model,
                               window=format_duration(size), start=start, end=end, aligned=aligned,
                               versions=versions, started=started)
        return report, parts, d, settings

    def record(self, report: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a window's report computed elsewhere (a drift runner in another process) as :meth:`check`
        applies its own: the configured actions, then the report into the history. Returns it with its
        actions, or None when that window of that deployment was recorded already (a runner may resend)."""
        from matih_lite.serving.deployments import Deployments

        tenant = str(report.get("tenant") or "default")
        principal = Principal(tenant, MONITOR_USER, ("admin",))
        try:
            self.artifacts.stat(_report_path(tenant, report))
            return None
        except NotFound:
            pass
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"not a drift report: {exc}") from None
        d = Deployments(self.host).get(principal, str(report["deployment"]))
        out = dict(report)
        out["actions"] = self.actions.act(principal, d, out, self.settings(d.model))
        self._store_report(tenant, out)
        return out

    def compare(self, agg: stats.WindowAggregate, profile: Profile | None, settings: DriftSettings,
                tests: Mapping[str, Any] | None = None, version: int | None = None) -> dict[str, Any]:
        """One version's drift in one window (see :func:`compare_window`), with the plugins' tests."""
        return compare_window(agg, profile, settings, self.tests() if tests is None else tests, version)


    # ---- stored reports -------------------------------------------------------------------------
    def _store_report(self, tenant: str, report: dict[str, Any]) -> None:
        rel = _report_path(tenant, report)
        try:
            self.artifacts.put(rel, json.dumps(report, default=str, allow_nan=False).encode())
        except (MatihError, ValueError) as exc:
            log.warning("drift report for %s not stored: %s", report["deployment"], getattr(exc, "message", exc))

    def history(self, principal: Principal, deployment: str, *, window: str | None = None,
                max_results: int = 50) -> list[dict[str, Any]]:
        """Stored reports of a deployment, newest first (of one window size when given)."""
        prefix = f"{principal.tenant}/_drift/reports/{segment(deployment)}"
        if window is not None:
            prefix += f"/{format_duration(parse_duration(window))}"
        try:
            infos = [i for i in self.artifacts.list(prefix, recursive=True)
                     if not i.is_dir and i.path.endswith(".json")]
        except NotFound:
            return []
        infos.sort(key=lambda i: i.path.rsplit("/", 1)[-1], reverse=True)
        out = []
        for info in infos[:max(1, min(int(max_results), 1000))]:
            try:
                out.append(json.loads(self.artifacts.get(info.path)))
            except (NotFound, ValueError):
                continue
        return out

    def last_checked(self, tenant: str, deployment: str, window: str) -> int | None:
        """The end of the last stored aligned check of a deployment's window size, or None."""
        prefix = f"{tenant}/_drift/reports/{segment(deployment)}/{window}"
        try:
            names = [i.path.rsplit("/", 1)[-1] for i in self.artifacts.list(prefix) if i.path.endswith(".json")]
        except NotFound:
            return None
        ends = [int(n[:-5]) for n in names if n[:-5].isdigit()]
        return max(ends) if ends else None

    # ---- the HTML report ------------------------------------------------------------------------
    def report_html(self, principal: Principal, deployment: str, window: Any = "1h", *, end: int | None = None) -> str:
        """A self-contained HTML report of one window (no actions): baseline-vs-current histograms and statistics."""
        from matih_lite.monitoring.report import render_report

        report, parts, _, _ = self._evaluate(principal, deployment, window, end, False)
        return render_report(report, parts)


# ---- helpers ------------------------------------------------------------------------------------------
def _version_order(text: Any) -> tuple[int, str]:
    digits = str(text).lstrip("vV")
    return (int(digits), "") if digits.isdigit() else (1 << 62, str(text))


def _is_float(column: Any) -> bool:
    import pyarrow as pa

    if not pa.types.is_floating(column.type):
        return False
    import pyarrow.compute as pc

    values = pc.drop_null(column).to_numpy(zero_copy_only=False)[:10_000]
    return bool(values.size) and bool(np.any(values != np.round(values)))


def _report_path(tenant: str, report: Mapping[str, Any]) -> str:
    """Where a window's report is kept: one file per (deployment, window size, end); manual checks apart."""
    suffix = "" if report.get("aligned") else "-manual"
    return (f"{tenant}/_drift/reports/{segment(str(report['deployment']))}/{report['window']}/"
            f"{int(report['end']):013d}{suffix}.json")










