"""``/api/v1/jobs`` and ``matih-lite train|tune|jobs`` without starting Ray: specs, quotas, queue, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from job_helpers import HERE, spec, wait_for, write_config
from litestar.testing import TestClient

from matih_lite.cli import main
from matih_lite.contracts.jobs import Job, Resources
from matih_lite.host import Host
from matih_lite.service import create_app

QUOTA = '[quotas."*"]\ncpus = 2\njobs = 1\n'


def occupy(host: Host) -> None:
    """A running job of tenant 'default' supervised by another (live) process: the quota is full."""
    now = int(time.time() * 1000)
    host.metadata.create_job(Job(tenant="default", job_id="f" * 32, name="elsewhere", kind="train",
                                 status="RUNNING", demand=Resources(1, 0), created_at=now - 10, heartbeat_at=now,
                                 owner="other-host:1:abc"))


@pytest.fixture
def api(hermetic):
    host = Host.open(str(write_config(hermetic, QUOTA)))
    occupy(host)
    with TestClient(create_app(host)) as client:
        client.host = host
        yield client
    from matih_lite.training.jobs import JobSupervisor

    JobSupervisor.of(host, start=False).stop()


def test_rest_submit_list_show_logs_cancel(api):
    r = api.post("/api/v1/jobs/", json={"spec": spec(), "kind": "train"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "QUEUED" and job["kind"] == "train" and job["cpus"] == 1
    waiting = wait_for(lambda: (b := api.get(f"/api/v1/jobs/{job['job_id']}").json())["message"].startswith(
        "waiting") and b, what="a waiting reason")
    assert waiting["message"] == "waiting for quota of tenant 'default': 1 of 1 jobs running"
    assert waiting["progress"] == {"status": "QUEUED"}
    listed = api.get("/api/v1/jobs/", params={"status": "QUEUED"}).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    logs = api.get(f"/api/v1/jobs/{job['job_id'][:6]}/logs").json()
    assert logs == {"text": "", "offset": 0, "status": "QUEUED"}
    r = api.post(f"/api/v1/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"


def test_rest_errors_are_problems_naming_the_key(api):
    r = api.post("/api/v1/jobs/", json={"spec": spec(resources={"cpus": 0})})
    assert r.status_code == 400 and "resources.cpus: must be more than 0" in r.json()["detail"]
    r = api.post("/api/v1/jobs/", json={"spec": spec(resources={"cpus": 3})})
    assert r.status_code == 400 and "could never run" in r.json()["detail"]
    r = api.post("/api/v1/jobs/", json={"spec": spec(), "kind": "tune"})
    assert r.status_code == 400 and "needs a [tune] table" in r.json()["detail"]
    assert api.get("/api/v1/jobs/0123456789").status_code == 404
    assert api.get("/api/v1/jobs/", params={"status": "DONE"}).status_code == 400


def test_ready_answers_without_importing_or_starting_ray(tmp_path):
    code = (
        "import sys, time\n"
        "from litestar.testing import TestClient\n"
        "from matih_lite.config import load_config\n"
        "from matih_lite.host import Host\n"
        "from matih_lite.service import create_app\n"
        "import matih_lite.service.jobs, matih_lite.training.jobs, matih_lite.builtin.ray_local\n"
        "t = time.monotonic()\n"
        f"with TestClient(create_app(Host(load_config(cwd=__import__('pathlib').Path({str(tmp_path)!r}))))) as c:\n"
        "    r = c.get('/ready')\n"
        "print(r.status_code, r.json()['slots']['compute'], 'ray' in sys.modules, round(time.monotonic() - t, 2))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    status, rest = out.stdout.split(" ", 1)
    assert status == "200"
    assert "Ray not started; starts on the first job" in rest
    assert " False " in rest  # ray was never imported


# ---- the CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


def test_cli_refuses_bad_specs_in_one_line(cli, hermetic):
    bad = hermetic / "bad.toml"
    bad.write_text(f'entrypoint = "jobfns:quadratic"\nbase_dir = "{HERE}"\n[resources]\ncpus = -1\n')
    code, _, err = cli("train", str(bad))
    assert code == 2 and "resources.cpus: must be more than 0" in err and len(err.strip().splitlines()) == 1
    good = hermetic / "good.toml"
    good.write_text(f'entrypoint = "jobfns:quadratic"\nbase_dir = "{HERE}"\n')
    code, _, err = cli("tune", str(good))
    assert code == 2 and "needs a [tune] table" in err
    code, _, err = cli("train", str(good), "--detach")
    assert code == 2 and "no .matih here" in err  # nothing to detach to in a folder with no state
    (hermetic / "matih.toml").write_text("")
    code, _, err = cli("train", str(good), "--detach")
    assert code == 2 and "--detach needs a running server" in err
    code, _, err = cli("train", str(hermetic / "missing.toml"))
    assert code == 2 and "does not exist" in err


def test_cli_jobs_list_shows_why_a_job_waits_then_cancel(cli, hermetic):
    host = Host.open(str(write_config(hermetic, QUOTA)))
    occupy(host)
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.training.jobs import Jobs, JobSupervisor

    job = Jobs(host).submit(LOCAL_ADMIN, spec(name="waits"))
    wait_for(lambda: Jobs(host).get(LOCAL_ADMIN, job.job_id).message.startswith("waiting"), what="a reason")
    try:
        code, out, _ = cli("jobs", "list")
        assert code == 0 and "waits" in out and "QUEUED" in out and "1 of 1 jobs running" in out
        code, out, _ = cli("jobs", "list", "--status", "queued", "--json")
        assert [j["name"] for j in json.loads(out)["jobs"]] == ["waits"]
        code, out, _ = cli("jobs", "show", job.job_id[:8])
        assert code == 0 and job.job_id in out and "waiting for quota" in out
        code, out, _ = cli("jobs", "logs", job.job_id[:8])
        assert code == 0 and out == ""
        code, out, _ = cli("jobs", "cancel", job.job_id[:8])
        assert code == 0 and "cancelled" in out
        code, _, err = cli("jobs", "show", "0000000000")
        assert code == 1 and "no job has the id" in err
    finally:
        JobSupervisor.of(host, start=False).stop()
        host.close()


def test_cli_jobs_manifest_shows_what_ray_local_would_start_and_refuses_what_could_never_fit(cli, hermetic):
    write_config(hermetic, '[quotas."*"]\ncpus = 1\n')
    (hermetic / "spec.toml").write_text(f'entrypoint = "jobfns:quadratic"\nbase_dir = "{HERE}"\n[params]\nx = 1\n')
    code, out, err = cli("jobs", "manifest", "spec.toml", "--json")
    assert code == 0, err
    (document,) = json.loads(out)
    assert document["backend"] == "ray-local" and document["command"][1:] == ["-m", "matih_lite.training.driver"]
    job = json.loads(document["environment"]["MATIH_JOB"])
    assert job["spec"]["entrypoint"] == "jobfns:quadratic" and job["tracking"]["home"].endswith(".matih")
    (hermetic / "big.toml").write_text(f'entrypoint = "jobfns:quadratic"\nbase_dir = "{HERE}"\n[resources]\ncpus = 2\n')
    code, _, err = cli("jobs", "manifest", "big.toml")
    assert code == 2 and "could never run" in err and len(err.strip().splitlines()) == 1
