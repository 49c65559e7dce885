"""``predict stream start|list|stop`` with no service running: the consumer is recorded on the folder, listed
as not running with its lag, and the service runs it when it starts; the output is the service's own."""

from __future__ import annotations

import json
import time

from test_deploy_cli import cli, models, wide_terminal  # noqa: F401  (fixtures shared with the deploy CLI tests)
from test_stream_cli import lines

from matih_lite.host import Host
from matih_lite.testing.service import serve


def test_start_and_list_without_a_service_record_the_consumer_and_the_service_runs_it(cli, models,  # noqa: F811
                                                                                       monkeypatch, tmp_path):
    monkeypatch.delenv("MATIH_URL", raising=False)
    assert cli("deploy", "churn-api", "--model", "churn", "--version", "2")[0] == 0
    requests = tmp_path / "requests.jsonl"
    requests.write_text(lines(25))
    assert cli("predict", "stream", "send", "--topic", "requests", "--file", str(requests))[0] == 0

    code, out, err = cli("predict", "stream", "start", "churn-api", "--source", "requests", "--sink", "answers")
    assert code == 0, err
    assert "consumes requests into answers (group churn-api; lag 25)" in " ".join(out.split())
    code, again, _ = cli("predict", "stream", "start", "churn-api", "--source", "requests", "--sink", "answers")
    assert code == 0 and again == out  # idempotent, as in the service
    code, out, err = cli("predict", "stream", "start", "churn-api", "--source", "other", "--sink", "answers")
    assert code == 2 and "already consumes 'requests'" in err and "Traceback" not in err
    code, out, _ = cli("predict", "stream", "list", "churn-api", "--json")
    [recorded] = json.loads(out)
    assert (recorded["running"], recorded["lag"], recorded["consumed"], recorded["last_error"]) == (False, 25, 0, None)
    code, table_text, _ = cli("predict", "stream", "list", "churn-api")
    assert code == 0 and "requests" in table_text and "answers" in table_text and "None" not in table_text.split()

    host = Host.open()
    try:
        with serve(host) as url:  # the service starts the recorded consumer
            monkeypatch.setenv("MATIH_URL", url)
            deadline = time.monotonic() + 30
            while True:
                code, out, _ = cli("predict", "stream", "list", "churn-api", "--json")
                [served] = json.loads(out)
                if served["predicted"] == 25 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert (served["running"], served["predicted"], served["lag"]) == (True, 25, 0)
            assert list(served) == list(recorded)  # the same fields, in the same order, either way
            code, out, _ = cli("predict", "stream", "read", "--topic", "answers", "--json")
            assert [json.loads(line)["data"]["predictions"] for line in out.splitlines()] == \
                   [[i + 100.0] for i in range(25)]
            monkeypatch.delenv("MATIH_URL")
    finally:
        host.close()

    # The service stopped: the consumer is still on record (it runs again with the service), its lag now 0.
    code, out, _ = cli("predict", "stream", "list", "churn-api", "--json")
    assert [(c["group"], c["running"], c["lag"]) for c in json.loads(out)] == [("churn-api", False, 0)]
    assert cli("predict", "stream", "stop", "churn-api")[0] == 0
    code, out, _ = cli("predict", "stream", "list", "churn-api")
    assert code == 0 and "consumes no stream" in out
    code, _, err = cli("predict", "stream", "stop", "churn-api")
    assert code != 0 and "has no stream consumer" in err and "Traceback" not in err
