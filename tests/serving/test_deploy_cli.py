"""``matih-lite deploy``, ``deployments list|show|history|delete`` and ``predict request``, embedded and over
``MATIH_URL`` against a running service."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from matih_lite.cli import main
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.testing.service import serve
from matih_lite.tracking import Tracking

T = "default"


class Offset:
    def __init__(self, offset: float) -> None:
        self.offset = offset

    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0] + self.offset


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return run


@pytest.fixture
def models(hermetic):
    host = Host.open()
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment(T, "cli-tests")
    for offset in (0.0, 100.0, 200.0):
        run = tracking.create_run(T, exp.experiment_id)
        with tempfile.TemporaryDirectory() as tmp:
            flavor_of(host, "pyfunc").save(Offset(offset), tmp, input_example=np.array([[1.0, 2.0]]))
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    tracking.log_artifact(T, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
        Registry(host).register_version(LOCAL_ADMIN, "churn", run_id=run.run_id, path="model", flavor="pyfunc")
    for version in (1, 2):  # live traffic goes to Staging and Production versions; v3 stays in Development
        Registry(host).promote(LOCAL_ADMIN, "churn", version, "Staging")
    host.close()


def test_deploy_list_show_history_predict_delete_embedded(cli, models):
    code, out, err = cli("deploy", "churn-api", "--model", "churn", "--split", "1=90,2=10", "--shadow", "3")
    assert code == 0, err
    assert "deployed churn-api" in out and "v1 90%, v2 10%" in out and "shadows: v3" in out
    code, out, _ = cli("deployments", "list")
    assert code == 0 and "churn-api" in out and "fixed versions" in out
    code, out, _ = cli("deploy", "churn-api", "--version", "2", "--reason", "v2 won the test")
    assert code == 0 and "v2 100%" in out
    code, out, _ = cli("deployments", "show", "churn-api", "--json")
    shown = json.loads(out)
    assert [r["version"] for r in shown["routes"]] == [2] and shown["shadows"] == [3] and shown["revision"] == 2
    code, out, _ = cli("predict", "request", "churn-api", "--json", '{"inputs": [[1.5, 0]]}', "--key", "ann")
    assert code == 0, out
    answer = json.loads(out)
    assert answer["predictions"] == [101.5] and (answer["version"], answer["variant"]) == (2, "v2")
    code, _, err = cli("predict", "request", "churn-api", "--json", '{"inputs": [["x", 0]]}')
    assert code == 2 and "string" in err
    code, _, err = cli("deploy", "other", "--version", "1")
    assert code == 2 and "give --model" in err
    code, _, err = cli("deploy", "churn-api", "--split", "1=50,2=60")
    assert code == 2 and "add up to 110" in err
    code, _, err = cli("deploy", "churn-api", "--version", "3")  # v3 is in Development: a shadow at most
    assert code == 2 and "version 3 of 'churn' is in Development; [governance] serve_stages" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert cli("deployments", "delete", "churn-api", "--yes", "--reason", "done")[0] == 0
    code, out, _ = cli("deployments", "history", "churn-api", "--json")
    assert [(c["action"], c["reason"]) for c in json.loads(out)["changes"]] == [
        ("created", ""), ("updated", "v2 won the test"), ("deleted", "done")]
    code, out, _ = cli("deployments", "history", "churn-api")
    assert "v2 won the test" in out
    code, _, err = cli("deployments", "show", "churn-api")
    assert code == 1 and "does not exist" in err


def test_the_cli_over_matih_url_and_a_running_service_noticing_embedded_changes(cli, models, monkeypatch):
    host = Host.open()
    try:
        with serve(host) as url:
            assert cli("deploy", "churn-api", "--model", "churn", "--version", "1")[0] == 0  # embedded
            monkeypatch.setenv("MATIH_URL", url)
            code, out, err = cli("predict", "request", "churn-api", "--json", '{"dataframe_split": {"data": [[1, 0]]}}')
            assert code == 0, err
            assert json.loads(out)["version"] == 1
            code, out, _ = cli("deployments", "show", "churn-api")
            assert code == 0 and "v1" in out
            monkeypatch.delenv("MATIH_URL")
            assert cli("models", "promote", "churn", "3", "--to", "Staging")[0] == 0
            assert cli("deploy", "churn-api", "--version", "3")[0] == 0  # embedded, while the service runs
            monkeypatch.setenv("MATIH_URL", url)
            deadline = time.monotonic() + 10
            while True:  # the service reads the change feed about once a second
                answer = json.loads(cli("predict", "request", "churn-api", "--json", '{"inputs": [[1, 0]]}')[1])
                if answer["version"] == 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert answer["version"] == 3 and answer["predictions"] == [201.0]
            code, out, _ = cli("deploy", "churn-api", "--shadow", "2", "--json")
            assert code == 0 and json.loads(out)["shadows"] == [2]
            code, _, err = cli("predict", "request", "nope", "--json", '{"inputs": [[1, 0]]}')
            assert code == 1 and "does not exist" in err
    finally:
        host.close()
