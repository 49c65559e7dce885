"""The traffic manager: serves a host's deployments, written once for any serving backend.

It keeps the deployments it serves in memory, loads their versions into the serving slot,
micro-batches model calls, records per-variant error rates and latencies for the canary, runs
shadows (a copy of each request after the response is on its way; outputs compared with the
primary's, never returned), steps canaries, and logs every inference. The hot path does no
synchronous disk I/O and no pandas: a record changed elsewhere reaches the cache through the
store's change feed, polled off the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.deployments import Deployment, Route
from matih_lite.contracts.llm import ServedLLM
from matih_lite.errors import InvalidInput, MatihError, NotFound, StoreError
from matih_lite.hookspecs import hookimpl
from matih_lite.identity import Principal
from matih_lite.serving.canary import (
    Canaries,
    LogFeed,
    ShadowStats,
    VariantStats,
    WindowStats,
    agreeing_rows,
    canary_section,
    outcome_stats,
)
from matih_lite.serving.deployments import Deployments
from matih_lite.serving.routing import TrafficSplit, variant_name

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.serving")


class ModelFailed(MatihError):
    """The model raised while predicting: the service's fault, counted in the variant's error rate."""

    status = 500
    title = "Model error"


class ModelUnavailable(MatihError):
    """A version could not be loaded, or a deployment has no version to serve yet."""

    status = 503
    title = "Model unavailable"


class ModelRefused(MatihError):
    """The serving backend refused to load a version a deployment change would route to: the change is refused."""

    status = 422
    title = "Model refused"


class Prediction(msgspec.Struct):
    """What answered a request, and how."""

    outputs: Any
    request_id: str
    deployment: str
    model: str
    variant: str
    version: int
    latency_ms: float


class ServedVersion:
    """A version loaded into the serving slot, with the batcher that feeds it and what its inputs are."""

    __slots__ = ("batcher", "feature_names", "feature_source", "flavor", "info", "key", "model", "schema", "tenant",
                 "version")

    def __init__(self, key: str, tenant: str, model: str, version: int, info: Any, batcher: Any,
                 flavor: str, feature_source: Any = None) -> None:
        from matih_lite.serving.flavors.base import InputSchema

        self.key, self.tenant, self.model, self.version = key, tenant, model, version
        self.info, self.batcher, self.flavor = info, batcher, flavor
        self.schema = getattr(info, "input_schema", None) or InputSchema()
        """What ``predict`` takes: requests are parsed for it."""
        self.feature_names: list[str] | None = list(self.schema.names) if self.schema.kind == "columns" else None
        self.feature_source = feature_source
        """What requests are enriched with from the online feature store (:mod:`matih_lite.serving.enrichment`)."""


class LiveDeployment:
    """A deployment as this process serves it: the record, its split, and the versions it may answer with."""

    __slots__ = ("deployment", "split", "versions")

    def __init__(self, d: Deployment) -> None:
        self.deployment = d
        self.split = TrafficSplit(d.name, d.routes)
        served = [r.version for r in d.routes] + list(d.shadows)
        if d.canary is not None and d.canary.status == "running":
            served += [v for v in (d.canary.candidate, d.canary.primary) if v is not None]
        self.versions: tuple[int, ...] = tuple(dict.fromkeys(served))


class Target(msgspec.Struct):
    """Where one request goes: the deployment, the route picked and the loaded version behind it."""

    live: Any
    route: Route
    served: Any


@dataclass
class _CanaryMark:
    """Where the current canary window starts in this process's samples (set at each step)."""

    stepped_at: int
    seq: dict[int, int] = field(default_factory=dict)


def inference_log_name(tenant: str, name: str) -> str:
    """The name a deployment's inference log goes under: the deployment name in the default tenant,
    ``TENANT.NAME`` in others (the events streams are not scoped by tenant)."""
    from matih_lite.identity import DEFAULT_TENANT

    return name if tenant == DEFAULT_TENANT else f"{tenant}.{name}"


class TrafficManager:
    """Serves deployments of one host: routing, loading, micro-batching, shadows, canary stepping, logging.

    Attached to its host with :func:`attach_traffic` (the service does it at startup, through the
    built-in :mod:`matih_lite.serving.plugin` plugin), so ``on_event`` reaches it. The
    request path (:meth:`target`, :meth:`infer`) is async and does no synchronous I/O: records
    come from an in-memory cache (a miss is read on a worker thread), models are loaded on worker
    threads, and every prediction goes through the version's :class:`~matih_lite.serving.batcher.MicroBatcher`.

    Settings (matih.toml): ``[server] batch_max_size`` (64 rows per model call),
    ``batch_max_wait_ms`` (0: a batch is whatever queued while the model was busy, so a lone request
    never waits, and concurrent ones still share calls; a positive wait holds each batch back that
    long for company), ``inline_predict_ms`` (1: a model whose calls take less than this on average is
    called on the event loop, a slower one on its batcher's worker thread; 0: always the thread),
    ``shadow_max_pending`` (1000 shadow calls in flight, beyond which copies are
    dropped and counted), ``refresh_seconds`` (1: how often the change feed is read);
    ``[canary] tick_seconds`` (1; 0: the canary scheduler is off and :meth:`step` is called by hand).
    """

    def __init__(self, host: Host, *, follow: bool = True) -> None:
        self.host = host
        self.deployments = Deployments(host)
        self.canaries = Canaries(self.deployments)
        self.follow = follow
        server = server_settings(host.config)
        self.batch_max_size = server.batch_max_size
        self.batch_max_wait_ms = server.batch_max_wait_ms
        self.inline_predict_ms = server.inline_predict_ms
        self.shadow_max_pending = server.shadow_max_pending
        self.refresh_seconds = server.refresh_seconds
        self.tick_seconds = canary_section(host.config).tick_seconds
        self._live: dict[tuple[str, str], LiveDeployment] = {}
        self._stats: dict[tuple[str, str], dict[int, VariantStats]] = {}
        self._shadow_stats: dict[tuple[str, str], dict[int, ShadowStats]] = {}
        self._marks: dict[tuple[str, str], _CanaryMark] = {}
        self._feeds: dict[tuple[str, str], LogFeed] = {}
        self._judge: Any = None
        self._models: dict[str, ServedVersion] = {}
        self._unused: dict[str, float] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._background_lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task | None = None
        self._cursor: int | None = None
        self._log: Any = None
        self._log_failed = False
        self._closed = False

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (change feed, canary scheduler, reconciling) on the running event loop.

        Without a running loop it starts with the first request instead.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ensure_runner(loop)

    def _ensure_runner(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed or (self._runner is not None and not self._runner.done() and self._loop is loop):
            return
        self._loop = loop
        self._runner = loop.create_task(self._run(), name="matih-traffic-manager")
        if self._log is not None:
            self._log.attach(loop)

    async def stop(self) -> None:
        """Stop the background loop and wait for shadows in flight (briefly)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except (asyncio.CancelledError, Exception):
                pass
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def close(self) -> None:
        """Stop everything this manager started: the loop, the batchers, the inference log (idempotent)."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            try:
                runner.get_loop().call_soon_threadsafe(runner.cancel)
            except RuntimeError:
                pass
        if self._background_lock.acquire(timeout=10):  # let a query in flight finish (see _background)
            self._background_lock.release()
        if self._judge is not None:
            self._judge.release()  # another replica judges the canaries from its next tick
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for m in models:
            if m.batcher is not None:
                m.batcher.close(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- the request path -----------------------------------------------------------------------------------
    async def target(self, tenant: str, name: str, *, key: str | None = None,
                     version: int | None = None) -> Target:
        """Route one request: by ``key`` (sticky) or at random, or to a pinned ``version`` the deployment serves.

        Loads the version on first use. Raises NotFound (no such deployment or version), ModelUnavailable.
        """
        live = self._live.get((tenant, name)) or await self.live(tenant, name)
        d = live.deployment
        if version is not None:
            if version not in live.versions:
                served = ", ".join(str(v) for v in live.versions) or "none yet"
                raise NotFound(f"deployment {name!r} does not serve version {version}; it serves: {served}")
            route = Route(variant_name(version), version, 0.0)
        else:
            if not live.split.routes:
                raise ModelUnavailable(f"deployment {name!r} has no version to serve yet: it follows "
                                       f"{d.target} {d.follows!r} of model {d.model!r}, which holds none",
                                       detail={"deployment": name})
            route = live.split.choose(key)
        served = self._models.get(_key(tenant, d.model, route.version))
        if served is None:
            try:
                served = await asyncio.to_thread(self._load, tenant, d.model, route.version)
            except ModelUnavailable:
                self.count_failure(d, route.version, 0.0)
                raise
        return Target(live, route, served)

    async def live(self, tenant: str, name: str) -> LiveDeployment:
        """The deployment as served (read on a worker thread when not cached). Raises NotFound."""
        loop = asyncio.get_running_loop()
        if self._runner is None or self._loop is not loop:
            self._ensure_runner(loop)
        live = self._live.get((tenant, name))
        return live if live is not None else await asyncio.to_thread(self._fetch, tenant, name)

    async def infer(self, target: Target, inputs: Any, *, request_id: str | None = None,
                    feature_lookup_ms: float | None = None) -> Prediction:
        """Predict ``inputs`` (parsed for ``target.served.schema``) with the routed version, micro-batched.

        Records the latency (and a failure) in the variant's stats, logs the request, and hands a
        copy to each shadow off the response path. Raises InvalidInput (the inputs do not fit the
        model: not counted), ModelFailed (the model raised: counted).
        """
        d: Deployment = target.live.deployment
        route, served = target.route, target.served
        if served.batcher is None:  # an llm version (matih_lite.serving.llm): generated, not predicted
            raise InvalidInput(f"deployment {d.name!r} serves an llm model: send OpenAI completions to "
                               f"/api/v1/deployments/{d.name}/chat/completions or /completions",
                               detail={"deployment": d.name})
        request_id = request_id or next_request_id()
        stats = self._variant_stats(d.tenant, d.name, route.version)
        start = time.perf_counter()
        try:
            outputs = await served.batcher.submit(inputs)
        except InvalidInput:
            raise
        except Exception as first:
            try:
                # A failed batch may be a neighbour's fault: try this request alone before blaming it.
                outputs = await asyncio.to_thread(self.host.backend("serving").predict, served.key, inputs)
            except InvalidInput:
                raise
            except StoreError:  # the serving backend's server is down: a 503 with Retry-After, the variant's error
                self.count_failure(d, route.version, (time.perf_counter() - start) * 1000, request_id)
                raise
            except Exception as exc:
                latency = (time.perf_counter() - start) * 1000
                self.count_failure(d, route.version, latency, request_id)
                raise ModelFailed(
                    f"version {route.version} of model {d.model!r} raised {type(exc).__name__}: {exc}"[:1000],
                    detail={"deployment": d.name, "variant": route.variant, "version": route.version,
                            "request_id": request_id}) from exc
            del first
        latency = (time.perf_counter() - start) * 1000
        at = now_ms()
        stats.add(at, latency, False)
        self._log_request(d, request_id, route.variant, route.version, inputs, outputs, latency, at, False,
                          served.feature_names, feature_lookup_ms)
        if d.shadows and route.weight > 0:
            self._start_shadows(d, inputs, outputs, latency, request_id)
        return Prediction(outputs, request_id, d.name, d.model, route.variant, route.version, latency)

    async def predict(self, tenant: str, name: str, inputs: Any, *, key: str | None = None,
                      version: int | None = None, request_id: str | None = None) -> Prediction:
        """:meth:`target` then :meth:`infer`, for inputs that are already arrays (SDK, streaming, tests)."""
        return await self.infer(await self.target(tenant, name, key=key, version=version), inputs,
                                request_id=request_id)

    def record_label(self, tenant: str, name: str, request_id: str, label: Any, *, row: int | None = None,
                     timestamp: int | None = None) -> None:
        """Log the true outcome of an earlier request (joined on ``request_id`` by the drift work)."""
        log_ = self._inference_log()
        if log_ is None:
            raise ModelUnavailable("the inference log is not available (the events slot failed; see the service log)")
        log_.record_label(inference_log_name(tenant, name), request_id, label, timestamp, row=row)

    # ---- what this process measured ------------------------------------------------------------------------
    def stats(self, tenant: str, name: str, *, since_ms: int = 0) -> dict[str, Any]:
        """Per-variant requests, errors, error rate and latency (since ``since_ms``, over the latest samples this
        process keeps: 20,000 per variant), the totals since the process started, and shadows' agreement."""
        variants = {}
        for version, st in sorted(self._stats.get((tenant, name), {}).copy().items()):
            w = st.window(since_ms)
            variants[variant_name(version)] = {"version": version, "requests": w.requests, "errors": w.errors,
                                               "error_rate": w.error_rate, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                                               "total_requests": st.seq, "total_errors": st.errors}
        shadows = {variant_name(v): {"version": v, **s.summary()}
                   for v, s in sorted(self._shadow_stats.get((tenant, name), {}).copy().items())}
        return {"deployment": name, "since": since_ms, "variants": variants, "shadows": shadows}

    def platform_stats(self, tenant: str, name: str, *, since_ms: int | None = None) -> dict[str, Any]:
        """Per-variant requests, errors, error rate and latency since ``since_ms`` (default: the last 15 minutes)
        as every replica logged them, read from the shared inference log (worker thread: it queries the events
        store). Raises ModelUnavailable when the inference log is off."""
        log_ = self._inference_log()
        if log_ is None:
            raise ModelUnavailable("the inference log is not available (the events slot failed; see the service log)")
        from matih_lite.serving.inference_log import variant_outcomes

        since = now_ms() - 15 * 60_000 if since_ms is None else int(since_ms)
        log_.flush()
        windows = outcome_stats(variant_outcomes(log_.events, inference_log_name(tenant, name), since))
        variants = {variant_name(v): {"version": v, "requests": w.requests, "errors": w.errors,
                                      "error_rate": w.error_rate, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms}
                    for v, w in windows.items() if v >= 0}
        return {"deployment": name, "since": since, "variants": variants, "source": "inference log"}

    def count_failure(self, d: Deployment, version: int, latency_ms: float, request_id: str | None = None) -> None:
        """Count a request a variant failed: in this process's stats and in the shared inference log (which the
        canary judge reads, whichever replica it runs on)."""
        self._variant_stats(d.tenant, d.name, version).add(now_ms(), latency_ms, True)
        log_ = self._log if self._log is not None else self._inference_log()
        if log_ is None:
            return
        try:
            log_.record_failure(inference_log_name(d.tenant, d.name), request_id or next_request_id(),
                                variant_name(version), version, latency_ms)
        except Exception:  # logging must never fail a request
            log.exception("inference log refused a failure of %s", d.name)

    def _variant_stats(self, tenant: str, name: str, version: int) -> VariantStats:
        by_version = self._stats.get((tenant, name))
        if by_version is None:
            by_version = self._stats.setdefault((tenant, name), {})
        st = by_version.get(version)
        if st is None:
            st = by_version.setdefault(version, VariantStats())
        return st

    # ---- shadows ---------------------------------------------------------------------------------------------
    def _start_shadows(self, d: Deployment, inputs: Any, outputs: Any, primary_ms: float, request_id: str) -> None:
        loop = asyncio.get_running_loop()
        for version in d.shadows:
            if len(self._tasks) >= self.shadow_max_pending:
                self._shadow_of(d, version).dropped += 1
                continue
            task = loop.create_task(self._shadow(d, version, inputs, outputs, primary_ms, request_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _shadow(self, d: Deployment, version: int, inputs: Any, primary_outputs: Any, primary_ms: float,
                      request_id: str) -> None:
        stats = self._shadow_of(d, version)
        try:
            served = self._models.get(_key(d.tenant, d.model, version))
            if served is None:
                served = await asyncio.to_thread(self._load, d.tenant, d.model, version)
            start = time.perf_counter()
            outputs = await served.batcher.submit(inputs)
            latency = (time.perf_counter() - start) * 1000
            rows, agreeing = agreeing_rows(primary_outputs, outputs)
            stats.add(rows, agreeing, latency, primary_ms)
            self._log_request(d, request_id, variant_name(version), version, inputs, outputs, latency, now_ms(), True,
                              served.feature_names)
        except Exception as exc:  # a shadow never fails anything but itself
            stats.failed()
            log.debug("shadow v%s of deployment %s failed: %s", version, d.name, exc)

    def _shadow_of(self, d: Deployment, version: int) -> ShadowStats:
        by_version = self._shadow_stats.setdefault((d.tenant, d.name), {})
        found = by_version.get(version)
        return found if found is not None else by_version.setdefault(version, ShadowStats())

    # ---- the inference log -----------------------------------------------------------------------------------
    @property
    def inference_log(self) -> Any:
        """The :class:`~matih_lite.serving.inference_log.InferenceLog` requests go to (None when the events
        slot cannot be used)."""
        return self._inference_log()

    def _inference_log(self) -> Any:
        if self._log is None and not self._log_failed and not self._closed:
            with self._lock:
                if self._log is None and not self._log_failed:
                    from matih_lite.serving.inference_log import InferenceLog

                    try:
                        # Flushing once a second: each flush is a DuckDB transaction of 15-20 ms.
                        self._log = InferenceLog(self.host.backend("events"), flush_interval_ms=1000)
                    except MatihError as exc:
                        self._log_failed = True
                        log.warning("inference logging is off: %s", exc.message)
                    else:
                        loop = self._loop
                        if loop is not None and not loop.is_closed():
                            self._log.attach(loop)  # its tables are built between requests, on the loop
        return self._log

    def _log_request(self, d: Deployment, request_id: str, variant: str, version: int, inputs: Any, outputs: Any,
                     latency: float, at: int, shadow: bool, feature_names: Sequence[str] | None,
                     feature_lookup_ms: float | None = None) -> None:
        log_ = self._log if self._log is not None else self._inference_log()
        if log_ is None:
            return
        try:
            log_.record(inference_log_name(d.tenant, d.name), request_id, variant, version, inputs, outputs, latency,
                        at, shadow, feature_names=feature_names, feature_lookup_ms=feature_lookup_ms)
        except Exception:  # logging must never fail a request
            log.exception("inference log refused a request of %s", d.name)

    # ---- records: cache, change feed, following ------------------------------------------------------------
    def _fetch(self, tenant: str, name: str) -> LiveDeployment:
        """Read a deployment not cached yet (worker thread); a follower is brought up to date first."""
        d = self.deployments.store.get_deployment(tenant, name)
        if self.follow and d.target != "versions":
            try:
                d = self.deployments.follow(d, "registry", f"{d.follows} holds another version", False) or d
            except MatihError:
                log.exception("deployment %s could not follow %s %s", name, d.target, d.follows)
        return self._install(d)

    def _install(self, d: Deployment, *, warm: bool = False) -> LiveDeployment:
        live = LiveDeployment(d)
        current = self._live.get((d.tenant, d.name))
        if current is not None and (current.deployment.created_at, current.deployment.revision) > \
                (d.created_at, d.revision):
            return current  # a newer record got here first
        self._live[(d.tenant, d.name)] = live
        loop = self._loop
        if warm and loop is not None and not loop.is_closed() and not self._closed:
            for version in live.versions:
                if _key(d.tenant, d.model, version) not in self._models:
                    try:
                        loop.call_soon_threadsafe(self._warm, d.tenant, d.model, version)
                    except RuntimeError:  # the loop closed meanwhile; the first request loads it
                        break
        return live

    def _warm(self, tenant: str, model: str, version: int) -> None:
        async def load() -> None:
            try:
                await asyncio.to_thread(self._load, tenant, model, version)
            except MatihError as exc:
                log.warning("cannot load version %s of model %s: %s", version, model, exc.message)

        task = asyncio.get_running_loop().create_task(load())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, tenant: str, name: str) -> None:
        self._live.pop((tenant, name), None)
        self._stats.pop((tenant, name), None)
        self._shadow_stats.pop((tenant, name), None)
        self._marks.pop((tenant, name), None)
        self._feeds.pop((tenant, name), None)

    def updated(self, d: Deployment) -> None:
        """A deployment changed through this process (REST, CLI, the canary): serve the new record now."""
        if (d.tenant, d.name) in self._live or self._loop is not None:
            self._install(d, warm=True)

    def admit(self, d: Deployment) -> None:
        """Load the versions the deployment ``d`` would route to or shadow, before the change is stored.

        Raises ModelRefused, with the serving backend's reason (Triton's, say), when one cannot load: the
        change is then refused and the routes served now keep serving. A backend that does not answer
        refuses nothing (the versions load when it does, as a change's versions always did).
        """
        for version in dict.fromkeys([r.version for r in d.routes] + list(d.shadows)):
            try:
                self._load(d.tenant, d.model, version)
            except ModelUnavailable as exc:
                # A backend down (StoreError) or a slot with no backend (the llm slot left empty) refuses
                # nothing: the deployment answers 503 saying why until the backend is there.
                if isinstance(exc.__cause__, (StoreError, ModelUnavailable)) or self._closed:
                    log.warning("deployment %s: version %s not loaded before the change: %s", d.name, version,
                                exc.message)
                    continue
                raise ModelRefused(f"deployment {d.name!r} not changed: {exc.message}",
                                   detail={**exc.detail, "deployment": d.name}) from exc

    def removed(self, tenant: str, name: str) -> None:
        self._forget(tenant, name)

    def poll_changes(self) -> int:
        """Read the store's change feed and refresh the cached deployments it names; returns changes read."""
        store = self.deployments.store
        if self._cursor is None:
            self._cursor = 0
            while batch := store.deployment_changes(self._cursor, max_results=5000):
                self._cursor = batch[-1].change_id
            return 0
        count = 0
        while batch := store.deployment_changes(self._cursor, max_results=1000):
            count += len(batch)
            self._cursor = batch[-1].change_id
            for key in dict.fromkeys((c.tenant, c.deployment) for c in batch):
                if key not in self._live:
                    continue
                try:
                    self._install(store.get_deployment(*key), warm=True)
                except NotFound:
                    self._forget(*key)
        return count

    def reconcile(self) -> list[Deployment]:
        """Bring the cached followers of a stage or alias to the registry's current version (worker thread)."""
        if not self.follow:
            return []
        changed = []
        for (tenant, _), live in list(self._live.items()):
            d = live.deployment
            if d.target == "versions":
                continue
            try:
                updated = self.deployments.follow(d, "registry", f"{d.follows} holds another version", False)
            except MatihError:
                log.exception("deployment %s could not follow %s %s", d.name, d.target, d.follows)
                continue
            if updated is not None:
                self._install(updated, warm=True)
                changed.append(updated)
        return changed

    @hookimpl
    def on_event(self, event: Any) -> None:
        """Registry events move the deployments that follow a stage or an alias."""
        if not self.follow or self._closed or not str(getattr(event, "type", "")).startswith("model."):
            return
        for d in self.deployments.on_registry_event(event):
            self.updated(d)

    # ---- the canary scheduler ------------------------------------------------------------------------------
    def step(self, now: int | None = None) -> list[Deployment]:
        """Judge every running canary once, at ``now`` (ms since the epoch; default: now); returns what changed.

        Runs on the replica that holds the ``canary-judge`` lease only (others return []), and judges each
        canary on the requests every replica logged since its last step, read from the shared inference log;
        on this process's own samples when the inference log is off.
        """
        duty = self.judge_duty()
        if not duty.held():
            self._feeds.clear()
            return []
        if duty.just_taken:  # another replica judged meanwhile: what this one remembers of the windows is stale
            self._feeds.clear()
            self._marks.clear()
        now = int(now if now is not None else now_ms())
        changed = []
        running = self.deployments.store.running_canaries()
        for key in set(self._feeds) - {(d.tenant, d.name) for d in running}:
            del self._feeds[key]
        if not running:
            return changed
        log_ = self._inference_log()
        if log_ is not None:
            log_.flush()  # what this replica answered is in the shared log before it is read back
        for d in running:
            canary = d.canary
            assert canary is not None
            key = (d.tenant, d.name)
            samples = self._samples(d, log_)
            seen = {v: st.seq for v, st in samples.copy().items()}
            verdict = self.canaries.judge(d, self._window(d, samples, canary.candidate, now),
                                          self._window(d, samples, canary.primary, now), now)
            if verdict.action == "wait":
                continue
            saved = self.canaries.apply_verdict(d, verdict, now)
            if saved is None:
                continue
            if saved.canary is not None:
                self._marks[key] = _CanaryMark(saved.canary.stepped_at, seen)
            log.info("deployment %s: canary of version %s %s (%s)", d.name, canary.candidate,
                     verdict.action, verdict.reason)
            self.updated(saved)
            changed.append(saved)
        return changed

    def judge_duty(self) -> Any:
        """The ``canary-judge`` :class:`~matih_lite.replicas.Duty` of this process (made on first use)."""
        if self._judge is None:
            from matih_lite.replicas import Duty

            self._judge = Duty(self.host.metadata, CANARY_DUTY)
        return self._judge

    def _samples(self, d: Deployment, log_: Any) -> dict[int, VariantStats]:
        """A running canary's samples per version: every replica's from the shared log, else this process's."""
        key = (d.tenant, d.name)
        if log_ is None:
            return self._stats.get(key, {})
        feed = self._feeds.get(key)
        if feed is None:
            assert d.canary is not None
            feed = self._feeds[key] = LogFeed(d.canary.stepped_at)
        try:
            feed.update(log_.events, inference_log_name(d.tenant, d.name))
        except StoreError as exc:  # judged on what was read so far; a missing window only delays a step
            log.warning("canary of %s: the inference log could not be read (%s)", d.name, exc.message)
        return feed.stats

    def _window(self, d: Deployment, samples: dict[int, VariantStats], version: int | None, now: int) -> WindowStats:
        """A canary variant's samples since the last step: by this process's mark of that step, else by time."""
        st = samples.get(version) if version is not None else None
        if st is None or d.canary is None:
            return WindowStats()
        mark = self._marks.get((d.tenant, d.name))
        if mark is not None and mark.stepped_at == d.canary.stepped_at and version in mark.seq:
            return st.window(after_seq=mark.seq[version])
        return st.window(d.canary.stepped_at, now)

    def _background(self, work: Any) -> Any:
        """Run one piece of background work on a worker thread, never after (or during) close.

        Cancelling the loop does not stop a thread already querying the store; close() waits on
        this lock so that the host never closes a database connection while a query is running.
        """
        with self._background_lock:
            if self._closed:
                return None
            return work()

    async def _run(self) -> None:
        last_step = last_sync = last_sweep = 0.0
        while True:
            try:
                now = time.monotonic()
                await asyncio.to_thread(self._background, self.poll_changes)
                if self.follow and self.tick_seconds > 0 and now - last_step >= self.tick_seconds:
                    last_step = now
                    await asyncio.to_thread(self._background, self.step)
                if self.follow and now - last_sync >= 10:
                    last_sync = now
                    await asyncio.to_thread(self._background, self.reconcile)
                if now - last_sweep >= 5:
                    last_sweep = now
                    self._unload_unused(now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the traffic manager's background loop failed; retrying")
            interval = min(self.refresh_seconds, self.tick_seconds) if self.tick_seconds > 0 else self.refresh_seconds
            await asyncio.sleep(max(interval, 0.05))

    # ---- loaded versions ------------------------------------------------------------------------------------------
    def _load(self, tenant: str, model: str, version: int) -> ServedVersion:
        """Load a version into the serving slot with its batcher (worker thread; once per key)."""
        from matih_lite.serving import load_version
        from matih_lite.serving.batcher import MicroBatcher

        key = _key(tenant, model, version)
        with self._lock:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            found = self._models.get(key)
            if found is not None:
                return found
            if self._closed:
                raise ModelUnavailable("the service is stopping")
            principal = Principal(tenant, "serving", ("viewer",))
            try:
                mv = self.deployments.registry.get_version(principal, model, version)
                info = load_version(self.host, tenant, mv, key=key)
            except MatihError as exc:
                raise ModelUnavailable(f"version {version} of model {model!r} cannot be loaded: {exc.message}",
                                       detail={"model": model, "version": version}) from exc
            except Exception as exc:
                log.exception("loading version %s of model %s failed", version, model)
                raise ModelUnavailable(f"version {version} of model {model!r} cannot be loaded: "
                                       f"{type(exc).__name__}: {exc}", detail={"model": model, "version": version}) \
                    from exc
            if isinstance(info, ServedLLM):
                batcher = None  # the LLM server batches its requests itself
            else:
                backend = self.host.backend("serving")

                def predict(rows: Any, _key: str = key) -> Any:
                    return backend.predict(_key, rows)

                batcher = MicroBatcher(predict, self.batch_max_size, self.batch_max_wait_ms,
                                       inline_max_ms=self.inline_predict_ms, name=key)
            from matih_lite.serving.enrichment import feature_source

            served = ServedVersion(key, tenant, model, version, info, batcher, getattr(info, "flavor", ""),
                                   feature_source(mv.tags or {}))
            self._inference_log()  # opened here, on a worker thread, rather than by the first request
            self._models[key] = served
            import gc
            gc.collect()
            gc.freeze()  # the framework the flavor imported and the model stay out of the collector's walks
            log.info("loaded version %s of model %s (%s)", version, model, served.flavor)
            return served

    def _unload_unused(self, now: float, grace: float = 30.0) -> None:
        used = {_key(live.deployment.tenant, live.deployment.model, v)
                for live in list(self._live.values()) for v in live.versions}
        for key in list(self._models):
            if key in used:
                self._unused.pop(key, None)
                continue
            since = self._unused.setdefault(key, now)
            if now - since < grace:
                continue  # requests routed just before the change may still be in its batcher
            with self._lock:
                served = self._models.pop(key, None)
            self._unused.pop(key, None)
            if served is not None:
                if served.batcher is not None:
                    served.batcher.close(timeout=0)
                try:
                    self.host.backend("llm" if isinstance(served.info, ServedLLM) else "serving").unload(key)
                except MatihError:
                    log.exception("unloading %s failed", key)

    def served_version(self, tenant: str, model: str, version: int) -> ServedVersion | None:
        return self._models.get(_key(tenant, model, version))

    def __repr__(self) -> str:
        return f"<TrafficManager of {getattr(self.host, 'profile', '?')} host: {len(self._live)} deployment(s)>"


def _key(tenant: str, model: str, version: int) -> str:
    from matih_lite.serving import serving_key

    return serving_key(tenant, model, version)


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[server]`` in matih.toml: how the ml-service batches and answers predictions."""

    batch_max_size: Annotated[int, msgspec.Meta(ge=1)] = 64
    """Rows per model call at most."""
    batch_max_wait_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """How long a lone request waits for company (0: a batch is whatever queued while the model was busy)."""
    inline_predict_ms: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """Models faster than this on average are called on the event loop, slower ones on a thread (0: a thread)."""
    shadow_max_pending: Annotated[int, msgspec.Meta(ge=0)] = 1000
    """Shadow calls in flight at most; beyond, copies are dropped and counted."""
    refresh_seconds: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """How often the deployments' change feed is read."""


def server_settings(config: Any) -> ServerSettings:
    """``[server]`` validated. Raises ConfigError with the key path."""
    from matih_lite.config import convert_settings

    return convert_settings(config.section("server"), ServerSettings, "server")


# ---- one manager per host ------------------------------------------------------------------------------------------
CANARY_DUTY = "canary-judge"
"""The lease the replica that judges running canaries holds (:class:`~matih_lite.replicas.Duty`)."""
PLUGIN = "matih_lite.serving.plugin"
"""The built-in plugin that asks for following and canary stepping; when it is blocked, deployments
are served as they are."""
MANAGER = "matih_lite.serving.traffic"
"""The name a host's traffic manager is registered under in its plugin manager."""


def attach_traffic(host: Host) -> TrafficManager:
    """The host's traffic manager, made and registered on first call (so the host's events reach it)."""
    pm = host.pm
    found = pm.get_plugin(MANAGER)
    if found is not None:
        return found
    manager = TrafficManager(host, follow=pm.get_plugin(PLUGIN) is not None)
    try:
        pm.register(manager, name=MANAGER)
    except ValueError:  # another thread attached one meanwhile
        return pm.get_plugin(MANAGER)
    return manager


_REQUEST_PREFIX = uuid.uuid4().hex[:16]
_request_counter = itertools.count(1)


def next_request_id() -> str:
    """A unique request id without a system call per request (uuid4 reads os.urandom each time,
    and the GIL hand-off around that call was the top entry of the predict path's profile)."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):016x}"


def detach_traffic(host: Host) -> None:
    """Close and unregister the host's traffic manager, if it has one."""
    manager = host.pm.get_plugin(MANAGER)
    if manager is not None:
        host.pm.unregister(name=MANAGER)
        manager.close()
