"""``matih-lite predict stream``: send, run (embedded, until idle) and read on a folder; start, list and stop
against a running service over ``MATIH_URL`` (without one: test_stream_cli_folder.py); mistakes are one line
and exit code 2."""

from __future__ import annotations

import json
import time

import pytest
from test_deploy_cli import cli, models, wide_terminal  # noqa: F401  (fixtures shared with the deploy CLI tests)

from matih_lite.host import Host
from matih_lite.testing.service import serve


def lines(n, start=0):
    return "\n".join(json.dumps({"request_id": f"r{i}", "inputs": [[float(i), 0.0]]})
                     for i in range(start, start + n)) + "\n"


def test_send_run_read_on_a_folder(cli, models, tmp_path):  # noqa: F811
    assert cli("deploy", "churn-api", "--model", "churn", "--version", "2")[0] == 0
    requests = tmp_path / "requests.jsonl"
    requests.write_text(lines(40))
    code, out, err = cli("predict", "stream", "send", "--topic", "requests", "--file", str(requests), "--json")
    assert code == 0, err
    assert json.loads(out) == {"topic": "requests", "first_offset": 0, "count": 40}
    code, out, err = cli("predict", "stream", "run", "churn-api", "--source", "requests", "--sink", "answers",
                         "--until-idle", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["consumed"], summary["predicted"], summary["failed"]) == (40, 40, 0)
    code, out, _ = cli("predict", "stream", "read", "--topic", "answers", "--max", "100", "--json")
    answers = [json.loads(line)["data"] for line in out.splitlines()]
    assert [a["request_id"] for a in answers] == [f"r{i}" for i in range(40)]
    assert [a["predictions"] for a in answers] == [[i + 100.0] for i in range(40)]
    # a second run reads nothing again: the group's offset was committed
    code, out, _ = cli("predict", "stream", "run", "churn-api", "--source", "requests", "--sink", "answers",
                       "--until-idle", "--json")
    assert json.loads(out)["consumed"] == 0


@pytest.mark.parametrize("args, message", [
    (("predict", "stream", "start", "nope", "--source", "a", "--sink", "b"), "does not exist"),
    (("predict", "stream", "run", "nope", "--source", "a", "--sink", "b", "--until-idle"), "does not exist"),
    (("predict", "stream", "run", "churn-api", "--source", "a", "--sink", "a", "--until-idle"), "another topic"),
    (("predict", "stream", "send", "--topic", "a", "--file", "/no/such/file"), "cannot read"),
])
def test_mistakes_are_one_line(cli, models, args, message):  # noqa: F811
    cli("deploy", "churn-api", "--model", "churn", "--version", "1")
    code, out, err = cli(*args)
    assert code in (1, 2) and message in err, (code, err)
    assert "Traceback" not in err


def test_start_list_stop_in_a_running_service(cli, models, monkeypatch, tmp_path):  # noqa: F811
    assert cli("models", "promote", "churn", "3", "--to", "Staging")[0] == 0
    assert cli("deploy", "churn-api", "--model", "churn", "--version", "3")[0] == 0
    host = Host.open()
    try:
        with serve(host) as url:
            monkeypatch.setenv("MATIH_URL", url)
            requests = tmp_path / "requests.jsonl"
            requests.write_text(lines(25))
            assert cli("predict", "stream", "send", "--topic", "requests", "--file", str(requests))[0] == 0
            code, out, err = cli("predict", "stream", "start", "churn-api", "--source", "requests", "--sink", "answers")
            assert code == 0, err
            assert "consumes requests into answers" in out
            deadline = time.monotonic() + 20
            while True:
                code, out, _ = cli("predict", "stream", "list", "churn-api", "--json")
                found = json.loads(out)
                if found[0]["predicted"] == 25 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert (found[0]["predicted"], found[0]["lag"]) == (25, 0)
            code, out, _ = cli("predict", "stream", "list", "churn-api")
            assert "requests" in out and "answers" in out
            assert "None" not in out.split()  # the table, and nothing printed after it
            code, out, _ = cli("predict", "stream", "read", "--topic", "answers", "--json")
            assert [json.loads(line)["data"]["predictions"] for line in out.splitlines()] == \
                   [[i + 200.0] for i in range(25)]
            assert cli("predict", "stream", "stop", "churn-api")[0] == 0
            code, out, _ = cli("predict", "stream", "list", "churn-api")
            assert "consumes no stream" in out
    finally:
        host.close()
