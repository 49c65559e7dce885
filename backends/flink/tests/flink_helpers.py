"""Helpers of the matih-flink tests: a platform on Kafka with drift on Flink, a model, traffic to log."""

from __future__ import annotations

import time
import types
from pathlib import Path

import numpy as np

from matih_lite.config import load_config
from matih_lite.hookspecs import hookimpl
from matih_lite.host import Host, get_plugin_manager
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving.inference_log import InferenceLog
from matih_lite.testing.flink import flink_profile
from matih_lite.testing.sources import placeholder_source

P = LOCAL_ADMIN
HOUR = 3_600_000
DAY = 24 * HOUR
NAMES = ["age", "income", "plan"]


class MemoryNotifier:
    """A notifier keeping what it is told (``[notifiers.memory]``)."""

    sent: list[dict] = []

    def __init__(self, settings=None):
        pass

    def notify(self, alert):
        MemoryNotifier.sent.append(alert)


def _plugin() -> types.ModuleType:
    mod = types.ModuleType("flink_test_plugin")
    mod.register_notifiers = hookimpl(lambda register: register("memory", MemoryNotifier))
    return mod


def make_host(folder: Path, kafka, *, drift: dict | None = None, extra: str = "") -> Host:
    """A host over ``folder``: events on ``kafka``, drift on Flink, alerts to a memory notifier."""
    import matih_flink.plugin
    import matih_kafka.plugin

    MemoryNotifier.sent = []
    path = folder / "matih.toml"
    path.write_text(flink_profile(kafka, folder, drift=drift, extra="[notifiers.memory]\n" + extra))
    plugins = get_plugin_manager(entry_points=False, plugins=[
        ("flink_test_plugin", _plugin()), ("kafka", matih_kafka.plugin), ("flink", matih_flink.plugin)])
    return Host(load_config(path), plugins=plugins)


def read_all(events, stream: str) -> list[dict]:
    """Every record of ``stream`` (its data), from the start."""
    out, offset = [], 0
    while True:
        page = events.read_from(stream, offset, 5000)
        if not page:
            return out
        out += [r.data for r in page]
        offset = page[-1].offset + 1


def past_day() -> int:
    """The start of yesterday (UTC): its windows are all closed by the clock."""
    return int(time.time() * 1000) // DAY * DAY - DAY


def training_data(n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    income = rng.lognormal(10, 0.5, n)
    plan = rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=[0.5, 0.3, 0.2])
    y = (age + rng.normal(0, 5, n) > 42).astype(int)
    pred = (age > 42).astype(int)
    return {"age": age, "income": income, "plan": plan, "y": y, "pred": pred}


def traffic(n: int, seed: int = 1, *, age_shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + age_shift, 10, n)
    return {"age": age, "income": rng.lognormal(10, 0.5, n),
            "plan": rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=[0.5, 0.3, 0.2]),
            "pred": (age > 42).astype(int), "truth": (age + rng.normal(0, 5, n) > 42).astype(int)}


def monitored(host: Host, name: str = "churn") -> None:
    """Model ``name`` v1 with a baseline, deployed under the same name."""
    from matih_lite.monitoring import Monitoring
    from matih_lite.serving.deployments import Deployments

    registry = Registry(host)
    registry.register_version(P, name, placeholder_source(host, P), flavor="sklearn")
    registry.promote(P, name, 1, "Staging")  # [governance] serve_stages: only Staging and Production serve
    Monitoring(host).build_baseline(P, name, 1, training_data(), target="y", prediction="pred")
    Deployments(host).deploy(P, name, name, version=1)


def log_requests(host: Host, data: dict[str, np.ndarray], *, start: int, end: int, deployment: str = "churn",
                 version: int = 1, labelled: int = 0) -> list[int]:
    """One request per row of ``data``, spread evenly over ``[start, end)``; the first ``labelled`` get a label.
    Returns the requests' timestamps."""
    n = len(data["age"])
    stamps = (start + (np.arange(n) * (end - start)) // n).tolist()
    with InferenceLog(host.backend("events"), flush_interval_ms=500, max_batch=20_000) as log:
        for i in range(n):
            log.record(deployment, f"r{version}-{start}-{i}", f"v{version}", version,
                       {k: data[k][i] for k in NAMES}, data["pred"][i:i + 1], 1.0, timestamp=stamps[i])
            if i < labelled:
                log.record_label(deployment, f"r{version}-{start}-{i}", int(data["truth"][i]), timestamp=stamps[i] + 1)
        log.flush()
    return stamps
