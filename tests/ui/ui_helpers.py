"""What the workbench tests put on the platform: runs logged through the SDK, a governed model, a drifting
deployment."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import numpy as np

from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.registry import Registry
from matih_lite.testing.sources import placeholder_source

HOUR = 3_600_000
FEATURES = ["age", "income", "plan"]


def log_runs(monkeypatch, url: str, token: str | None = None) -> dict[str, str]:
    """Three runs of experiment ``churn`` through the SDK over HTTP (a and b differ only in ``lr``), and a
    run nested in a.

    Returns run ids by name (a, b, c, a-fold-1), and the experiment id under ``"experiment"``.
    """
    import matih_lite as ml

    monkeypatch.setenv("MATIH_URL", url)
    if token:
        monkeypatch.setenv("MATIH_TOKEN", token)
    runs = {}
    specs = {"a": ({"lr": 0.1, "depth": 6, "model": "xgb"}, 0.91),
             "b": ({"lr": 0.2, "depth": 6, "model": "xgb"}, 0.89),
             "c": ({"lr": 0.1, "depth": 8, "model": "lgbm"}, 0.93)}
    for name, (params, auc) in specs.items():
        with ml.start_run(experiment="churn", run_name=f"run-{name}", capture=False) as run:
            ml.log_params(params)
            ml.log_metric("auc", auc)
            for step in range(200):
                ml.log_metric("loss", 1.0 / (step + 1) + (0.5 if name == "b" else 0.0), step=step)
            ml.log_text("hello <b>not bold</b>\n", "notes/readme.txt")
            ml.log_dict({"features": ["age", "plan"], "threshold": 0.5}, "config.json")
            ml.set_tag("team", "growth")
            if name == "a":
                ml.log_input("s3://bucket/churn/train.parquet", version="3")
                with ml.start_run(run_name="run-a-fold-1", nested=True, capture=False) as child:
                    ml.log_metric("auc", 0.9)
                runs["a-fold-1"] = child.run_id
            runs[name] = run.run_id
            runs["experiment"] = run.experiment_id
    ml.flush()
    return runs


def experiment_id(host: Any, tenant: str = "default", name: str = "churn") -> str:
    from matih_lite.tracking import Tracking

    return Tracking(host).get_experiment_by_name(tenant, name).experiment_id


def pending_production(host: Any, model: str = "churn", tenant: str = "acme", requester: str = "ann") -> dict[str, Any]:
    """``model`` owned by the requester: v1 in Production, v2 in Staging with a pending Production request."""
    registry = Registry(host)
    who = Principal(tenant, requester, ("editor",))
    registry.create_model(who, model, description="who will leave")
    for _ in range(2):
        registry.register_version(who, model, placeholder_source(host, who), flavor="sklearn")
    admin = Principal(tenant, "ada", ("admin",))
    registry.promote(who, model, 1, "Staging")
    first = registry.promote(who, model, 1, "Production")
    registry.approve(admin, first.approval_id, comment="first release")
    registry.promote(who, model, 2, "Staging")
    approval = registry.promote(who, model, 2, "Production", reason="better auc")
    return {"approval_id": approval.approval_id, "model": model, "version": 2}


def training_data(n: int = 5000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    return {"age": age, "income": rng.lognormal(10, 0.5, n),
            "plan": rng.choice(np.array(["basic", "plus", "pro"], dtype=object), n, p=[0.5, 0.3, 0.2]),
            "y": (age > 42).astype(int), "pred": (age > 42).astype(int)}


def drifting_deployment(host: Any, *, name: str = "churn-live", requests: int = 40, rows: int = 3000) -> str:
    """A deployment whose baseline is training data and whose last hour of traffic has ``age`` shifted by +25.

    The traffic goes to the inference log as the service writes it (the model itself is never called).
    """
    from matih_lite.monitoring.service import Monitoring
    from matih_lite.serving.deployments import Deployments
    from matih_lite.serving.inference_log import InferenceLog

    registry = Registry(host)
    registry.register_version(LOCAL_ADMIN, "churn", placeholder_source(host, LOCAL_ADMIN), flavor="sklearn")
    registry.promote(LOCAL_ADMIN, "churn", 1, "Staging")  # a version takes live traffic from Staging on
    Monitoring(host).build_baseline(LOCAL_ADMIN, "churn", 1, training_data(), target="y", prediction="pred")
    Deployments(host).deploy(LOCAL_ADMIN, name, "churn", version=1)
    rng = np.random.default_rng(5)
    age = rng.normal(65, 10, rows)
    data = {"age": age, "income": rng.lognormal(10, 0.5, rows),
            "plan": rng.choice(np.array(["basic", "plus", "pro"], dtype=object), rows, p=[0.5, 0.3, 0.2])}
    now = int(time.time() * 1000)
    with InferenceLog(host.backend("events"), flush_interval_ms=10_000) as log:
        bounds = np.linspace(0, rows, requests + 1).astype(int)
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            at = now - HOUR // 2 + i * 1000
            log.record(name, f"req-{i}", "v1", 1, {k: data[k][a:b] for k in FEATURES}, (age[a:b] > 42).astype(int),
                       1.5, timestamp=at)
        log.flush()
    return name


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Doubling:
    """A pyfunc model: twice its first input."""

    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] * 2.0


def servable_versions(host: Any, name: str = "doubler", versions: int = 2) -> None:
    """``versions`` versions of a real pyfunc model, saved, logged to a run, registered and promoted to Staging
    (where a version may take live traffic)."""
    import tempfile
    from pathlib import Path

    from matih_lite.serving import flavor as flavor_of
    from matih_lite.tracking import Tracking

    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment("default", "serving").experiment_id
    for _ in range(versions):
        run = tracking.create_run("default", exp)
        with tempfile.TemporaryDirectory() as tmp:
            flavor_of(host, "pyfunc").save(Doubling(), tmp, input_example=np.array([[1.0, 2.0]]))
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    tracking.log_artifact("default", run.run_id, f"model/{f.relative_to(tmp).as_posix()}",
                                          f.read_bytes())
        version = Registry(host).register_version(LOCAL_ADMIN, name, run_id=run.run_id, path="model", flavor="pyfunc")
        Registry(host).promote(LOCAL_ADMIN, name, version.version, "Staging")
