"""Helpers of the drift tests: a platform in a temporary folder, a model, a deployment, traffic to log."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np

from matih_lite.config import load_config
from matih_lite.hookspecs import hookimpl
from matih_lite.host import Host, get_plugin_manager
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving.inference_log import InferenceLog
from matih_lite.testing.sources import placeholder_source

P = LOCAL_ADMIN
HOUR = 3_600_000
T0 = 1_800_000_000_000 // (24 * HOUR) * (24 * HOUR)  # a day boundary (so also an hour and a 4-hour one)
NAMES = ["age", "income", "plan"]


class MemoryNotifier:
    """A notifier keeping what it is told (``[notifiers.memory]``); one list per host."""

    sent: list[dict] = []

    def __init__(self, settings=None):
        pass

    def notify(self, alert):
        MemoryNotifier.sent.append(alert)


class FakeCompute:
    """A compute backend that records the jobs it is given."""

    def __init__(self, settings, context):
        self.jobs = []

    def health(self):
        from matih_lite.contracts import Health

        return Health(True, "fake")

    def submit(self, job):
        self.jobs.append(dict(job))
        return f"job-{len(self.jobs)}"


def drift_test_plugin() -> types.ModuleType:
    mod = types.ModuleType("monitoring_test_plugin")
    mod.register_notifiers = hookimpl(lambda register: register("memory", MemoryNotifier))
    mod.register_backends = hookimpl(lambda register: register("compute", "fake", FakeCompute))
    return mod



def make_host(folder: Path, toml: str = "") -> Host:
    """A host over ``folder`` with the test plugin; ``toml`` is matih.toml's text."""
    MemoryNotifier.sent = []
    path = folder / "matih.toml"
    path.write_text(toml or "")
    plugins = get_plugin_manager(entry_points=False, plugins=[("monitoring_test_plugin", drift_test_plugin())])
    return Host(load_config(path), plugins=plugins)


DEFAULT_TOML = """
[notifiers.memory]
[canary]
tick_seconds = 0
"""


def training_data(n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    income = rng.lognormal(10, 0.5, n)
    plan = rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=[0.5, 0.3, 0.2])
    y = (age + rng.normal(0, 5, n) > 42).astype(int)
    pred = (age > 42).astype(int)
    return {"age": age, "income": income, "plan": plan, "y": y, "pred": pred}


def traffic(n: int, seed: int = 1, *, age_shift: float = 0.0, plan_p=(0.5, 0.3, 0.2)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + age_shift, 10, n)
    return {"age": age, "income": rng.lognormal(10, 0.5, n),
            "plan": rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=list(plan_p)),
            "pred": (age > 42).astype(int), "truth": (age + rng.normal(0, 5, n) > 42).astype(int)}


def register_model(host: Host, name: str = "churn", versions: int = 1) -> None:
    """``versions`` versions of ``name``, each promoted to Staging (where a version may take live traffic)."""
    registry = Registry(host)
    for _ in range(versions):
        version = registry.register_version(P, name, placeholder_source(host, P), flavor="sklearn")
        registry.promote(P, name, version.version, "Staging")


def deploy(host: Host, name: str = "churn", model: str = "churn", version: int = 1):
    from matih_lite.serving.deployments import Deployments

    return Deployments(host).deploy(P, name, model, version=version)


def log_traffic(host: Host, data: dict[str, np.ndarray], *, start: int, end: int, version: int = 1,
                deployment: str = "churn", labels: bool = True, requests: int = 60, flip_labels: bool = False) -> None:
    """Spread ``data`` over ``requests`` requests evenly in ``[start, end)``, with labels when asked."""
    n = len(data["age"])
    with InferenceLog(host.backend("events"), flush_interval_ms=10_000) as log:
        bounds = np.linspace(0, n, requests + 1).astype(int)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if a == b:
                continue
            at = start + (end - start) * i // requests
            features = {k: data[k][a:b] for k in NAMES}
            log.record(deployment, f"{version}-{start}-{i}", f"v{version}", version, features, data["pred"][a:b], 1.0,
                       timestamp=at)
            if labels:
                truth = data["truth"][a:b]
                log.record_label(deployment, f"{version}-{start}-{i}", (1 - truth) if flip_labels else truth,
                                 timestamp=at + 1)
        log.flush()
