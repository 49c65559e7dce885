"""Live traffic goes only to versions the policy lets serve (``[governance] serve_stages``, by default Staging and
Production): a deployment's primary, an A/B variant, a canary's candidate, what a stage or an alias brings. A shadow
may be any version. A refusal names the rule: one line and exit 2 from the CLI, a 422 problem over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
from litestar.testing import TestClient
from serving_helpers import register_model

from matih_lite.cli import main
from matih_lite.errors import TrafficRefused
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.service import create_app
from matih_lite.serving.deployments import Deployments

EXAMPLE = np.array([[1.0, 2.0]])


class Echo:
    def predict(self, inputs):
        return np.asarray(inputs, dtype=np.float64)[:, 0]


@pytest.fixture
def host(hermetic):
    """Model churn: v1 in Staging, v2 in Development (as it was registered), v3 in Production."""
    (hermetic / "matih.toml").write_text('[models."*"]\nproduction_approvers = []\n')
    h = Host.open()
    register_model(h, "churn", Echo(), example=EXAMPLE)
    register_model(h, "churn", Echo(), example=EXAMPLE, stage=None)
    register_model(h, "churn", Echo(), example=EXAMPLE)
    Registry(h).promote(LOCAL_ADMIN, "churn", 3, "Production")
    yield h
    h.close()


def test_a_development_version_takes_no_live_traffic_in_any_role(host):
    deployments = Deployments(host)
    refusals = [
        lambda: deployments.create(LOCAL_ADMIN, "a", "churn", version=2),
        lambda: deployments.create(LOCAL_ADMIN, "b", "churn", split="1=90,2=10"),
        lambda: deployments.create(LOCAL_ADMIN, "c", "churn", stage="Development"),
    ]
    for refuse in refusals:
        with pytest.raises(TrafficRefused, match=r"serve_stages") as info:
            refuse()
        assert info.value.detail["rule"] == "governance.serve_stages"
        assert info.value.detail["allowed"] == ["Staging", "Production"]
        assert info.value.status == 422 and info.value.exit_code == 2
    assert "an A/B variant" in str(pytest.raises(TrafficRefused, deployments.create, LOCAL_ADMIN, "b", "churn",
                                                 split="1=90,2=10").value)
    live = deployments.create(LOCAL_ADMIN, "live", "churn", version=1, canary=True, shadows=[2])  # a shadow: fine
    assert [r.version for r in live.routes] == [1] and live.shadows == [2]
    with pytest.raises(TrafficRefused, match="version 2 of 'churn' is in Development"):
        deployments.update(LOCAL_ADMIN, "live", version=2)  # a canary's candidate
    d = deployments.update(LOCAL_ADMIN, "live", version=3)  # Production: the canary starts
    assert d.canary.candidate == 3
    assert [c.action for c in deployments.history(LOCAL_ADMIN, "live").items] == ["created", "canary.started"]


def test_an_alias_moved_to_a_development_version_is_not_followed(host):
    registry, deployments = Registry(host), Deployments(host)
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 2)
    with pytest.raises(TrafficRefused, match="version 2"):
        deployments.create(LOCAL_ADMIN, "champ", "churn", alias="champion")
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 1)
    assert [r.version for r in deployments.create(LOCAL_ADMIN, "champ", "churn", alias="champion").routes] == [1]
    registry.set_alias(LOCAL_ADMIN, "churn", "champion", 2)
    deployments.sync("default", "churn", alias="champion")
    assert [r.version for r in deployments.get(LOCAL_ADMIN, "champ").routes] == [1]


def test_the_http_refusal_is_a_422_problem_naming_the_rule(host):
    with TestClient(create_app(host)) as client:
        made = client.post("/api/v1/deployments", json={"name": "api", "model": "churn", "version": 2})
        assert made.status_code == 422 and made.headers["content-type"].startswith("application/problem+json")
        problem = made.json()
        assert problem["rule"] == "governance.serve_stages" and problem["stage"] == "Development"
        assert "promote it first" in problem["detail"]
        assert client.post("/api/v1/deployments", json={"name": "api", "model": "churn", "version": 1,
                                                        "shadows": [2]}).status_code == 201
        changed = client.patch("/api/v1/deployments/api", json={"split": "1=50,2=50"})
        assert changed.status_code == 422 and changed.json()["version"] == 2


def test_serve_stages_is_a_setting_and_validate_checks_it(hermetic, capsys):
    (hermetic / "matih.toml").write_text('[governance]\nserve_stages = ["Development", "staging", "Production"]\n')
    h = Host.open()
    try:
        register_model(h, "churn", Echo(), example=EXAMPLE, stage=None)
        assert [r.version for r in Deployments(h).create(LOCAL_ADMIN, "dev", "churn", version=1).routes] == [1]
    finally:
        h.close()
    for value, words in (('["Stagin"]', "governance.serve_stages[0]: unknown stage 'Stagin'; did you mean 'Staging'?"),
                         ("[]", "governance.serve_stages: name at least one stage"),
                         ('"Staging"', "governance.serve_stages: Expected `array`")):
        (hermetic / "matih.toml").write_text(f"[governance]\nserve_stages = {value}\n")
        with pytest.raises(SystemExit) as exit_info:
            main(["config", "validate"])
        _, err = capsys.readouterr()
        assert exit_info.value.code == 2 and words in err, err
