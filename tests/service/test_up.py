"""``matih-lite up`` as a newcomer runs it: ready quickly, refuses unsafe binds, stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, cwd, timeout=60):
    return subprocess.run([sys.executable, "-m", "matih_lite", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_up_gets_ready_without_loading_heavy_parts_and_stops_on_sigterm(tmp_path):
    """How fast is a benchmark's question; this checks what keeps it fast: nothing heavy loads at start."""
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready_after = None
        while time.monotonic() - start < 60:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=0.5).status_code == 200:
                    ready_after = time.monotonic() - start
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert ready_after is not None, proc.stderr.read() if proc.poll() is not None else "never ready"
        assert (tmp_path / ".matih" / "matih.db").exists()
        # Nothing heavy was started: no Ray, no MLflow, no sklearn in the server process.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert f"http://127.0.0.1:{port}" in out
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_refuses_non_loopback_without_auth(tmp_path):
    r = cli("up", "--host", "0.0.0.0", "--port", str(free_port()), cwd=tmp_path)
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr and "Traceback" not in r.stderr


def test_up_reports_a_busy_port_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("up", "--port", str(s.getsockname()[1]), cwd=tmp_path)
    assert r.returncode == 2
    assert "cannot listen on 127.0.0.1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_import_and_up_stay_light(tmp_path):
    code = ("import sys, matih_lite, matih_lite.service, matih_lite.host; "
            "heavy = [m for m in ('ray', 'mlflow', 'sklearn', 'torch', 'pandas', 'feast') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_validate_and_doctor_exit_codes(tmp_path):
    assert cli("config", "validate", cwd=tmp_path).returncode == 0
    assert cli("doctor", cwd=tmp_path).returncode == 0
    (tmp_path / "matih.toml").write_text('[profiles.lite]\nmetadata = { backend = "postgress" }\ncompute = 3\n')
    r = cli("config", "validate", cwd=tmp_path)
    assert r.returncode == 2
    assert re.search(r"profiles.lite.metadata: unknown backend 'postgress'; installed: .*sqlite", r.stderr)
    assert "profiles.lite.compute: expected a table" in r.stderr
    assert cli("doctor", cwd=tmp_path).returncode == 2
    (tmp_path / "matih.toml").write_text("[profiles.lite\n")
    r = cli("up", cwd=tmp_path)
    assert r.returncode == 2 and "line 1" in r.stderr and "Traceback" not in r.stderr


def test_config_show_masks_secrets(tmp_path):
    (tmp_path / "matih.toml").write_text('[profiles.cluster]\nmetadata = { backend = "postgres", dsn = "${DSN}" }\n')
    env = {**os.environ, "DSN": "postgresql://ml:hunter2@db/ml"}
    r = subprocess.run([sys.executable, "-m", "matih_lite", "config", "show", "--profile", "cluster", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout and "ml:****@db" in r.stdout


def test_config_validate_and_up_check_the_governance_policy(tmp_path):
    (tmp_path / "matih.toml").write_text('[models.churn]\nstaging_requires = ["latency_ms <== 20"]\n'
                                         'production_approvers = ["owner", "leed"]\n')
    r = cli("config", "validate", cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert "models.churn.staging_requires" in r.stderr and "models.churn.production_approvers" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("up", "--port", str(free_port()), cwd=tmp_path)
    assert r.returncode == 2 and "models.churn.staging_requires" in r.stderr and "Traceback" not in r.stderr


def _start_up(cwd, port, env=None):
    proc = subprocess.Popen([sys.executable, "-m", "matih_lite", "up", "--port", str(port)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60  # generous: these tests are about ownership, not start-up time
    while time.monotonic() < deadline:
        if (cwd / ".matih" / "service.json").exists():
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=0.5).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("up was not ready with its service.json")


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, err


def test_one_service_owns_a_folder_and_every_command_finds_it(tmp_path):
    import json

    port = free_port()
    proc = _start_up(tmp_path, port)
    try:
        info = json.loads((tmp_path / ".matih" / "service.json").read_text())
        assert info["url"] == f"http://127.0.0.1:{port}" and info["pid"] == proc.pid and info["profile"] == "lite"
        second = cli("up", "--port", str(free_port()), cwd=tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert "already serves" in second.stderr and f"pid {proc.pid}" in second.stderr
        # doctor answers from the running service (it owns the events file), exit 0
        doctor = cli("doctor", "--json", cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert {r["slot"]: r["status"] for r in json.loads(doctor.stdout)["slots"]}["events"] == "ok"
        before = httpx.get(f"http://127.0.0.1:{port}/metrics").text.count('route="/api/v1/drift/tests"')
        r = cli("drift", "tests", "--json", cwd=tmp_path)  # an ordinary command: through the service
        assert r.returncode == 0, r.stderr
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'route="/api/v1/drift/tests"' in metrics and before == 0
    finally:
        out, err = _stop(proc)
    assert not (tmp_path / ".matih" / "service.json").exists()
    assert "Traceback" not in err


def test_a_stale_service_file_is_ignored_and_replaced(tmp_path):
    import json

    home = tmp_path / ".matih"
    home.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (home / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": int(dead), "profile": "lite",
                                                   "started_at": 0, "home": str(home)}))
    r = cli("drift", "tests", "--json", cwd=tmp_path)  # not sent to the dead service: works on the folder
    assert r.returncode == 0, r.stderr
    port = free_port()
    proc = _start_up(tmp_path, port)
    try:
        assert json.loads((home / "service.json").read_text())["pid"] == proc.pid
    finally:
        _stop(proc)


def test_a_command_in_a_folder_without_state_says_so_and_creates_nothing(tmp_path):
    r = cli("runs", "list", "--experiment", "churn", cwd=tmp_path)
    assert r.returncode == 2 and "no .matih here" in r.stderr and "set MATIH_URL" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / ".matih").exists()
    assert cli("migrate", cwd=tmp_path).returncode == 0  # up or migrate make the state folder
    assert cli("runs", "list", "--experiment", "churn", cwd=tmp_path).returncode in (0, 1)
    assert (tmp_path / ".matih" / "matih.db").exists()


@pytest.mark.slow
def test_up_stops_cleanly_after_a_training_job_and_its_ray_listens_on_loopback_only(tmp_path):
    """A job starts ray-local's Ray inside ``up``: every Ray listener is on 127.0.0.1 (never the host's
    outward address), and SIGTERM afterwards shuts down with exit 0, without Ray's stack dump."""
    import psutil

    helpers = Path(__file__).resolve().parents[1] / "training"
    (tmp_path / "matih.toml").write_text('[profiles.lite]\ncompute = { backend = "ray-local", num_cpus = 1 }\n')
    (tmp_path / "job.toml").write_text(f'entrypoint = "jobfns:quadratic"\nbase_dir = "{helpers}"\n'
                                       'experiment = "t"\n[params]\nx = 1.0\niterations = 2\n')
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)}
    proc = _start_up(tmp_path, free_port(), env=env)
    try:
        trained = subprocess.run([sys.executable, "-m", "matih_lite", "train", "job.toml"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert trained.returncode == 0 and "SUCCEEDED" in trained.stdout, trained.stdout + trained.stderr
        tree = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.pid in tree and c.status == "LISTEN"}
        ray_processes = [p for p in psutil.Process(proc.pid).children(recursive=True) if "raylet" in p.name()]
        assert ray_processes, "the job did not start Ray inside up"
        assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    finally:
        out, err = _stop(proc)
    assert "SIGTERM received" not in err and "Traceback" not in err, err[-3000:]
    assert "ml-service stopped" in out
