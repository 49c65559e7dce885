"""Model cards: metrics with bootstrap intervals and fairness computed from data, renderings, edits, history."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from litestar.testing import TestClient
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression

import matih_lite as ml
from matih_lite import sdk
from matih_lite.config import load_config
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.host import Host
from matih_lite.identity import LOCAL_ADMIN
from matih_lite.registry import Registry
from matih_lite.registry.cards import ModelCards, render_html, render_markdown
from matih_lite.registry.evaluation import evaluate_predictions, resample_counts
from matih_lite.testing.service import ServiceThread

MLMODEL = ("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
           "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n")


def make_data(n: int, seed: int = 0):
    """A churn-like task where group "b" gets more positive predictions than group "a"."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["a", "b"]), n, p=[0.6, 0.4])
    x1 = rng.normal(size=n) + (sex == "b") * 0.7
    x2 = rng.normal(size=n)
    logit = 1.2 * x1 - 0.8 * x2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.column_stack([x1, x2]), y, sex


@pytest.fixture(autouse=True)
def clean_sdk():
    yield
    while sdk.active_run() is not None:
        sdk.end_run()
    with sdk._state.lock:
        for session in list(sdk._state.sessions.values()):
            session.buffer.close()
            session.client.close()
        sdk._state.sessions.clear()


def train_and_register(folder, model, X, y, name="churn"):
    """Train in a run (logging its data and the pickled model as the autologger does), then register."""
    with ml.start_run(experiment=name, capture=False) as run:
        ml.log_input("s3://bucket/churn/train.parquet", version="v3", digest="sha256:ab12",
                     properties={"start_date": "2024-01-01", "end_date": "2024-06-30", "rows": len(y),
                                 "quality_score": 0.97})
        model.fit(X, y)
        ml.log_metric("training_accuracy", float(model.score(X, y)))
        ml.get_client().log_artifact_bytes(run.run_id, "model/model.pkl", pickle.dumps(model))
        ml.log_text(MLMODEL, "model/MLmodel")
    ml.flush()
    host = Host(load_config(cwd=folder))
    try:
        mv = Registry(host).register_version(LOCAL_ADMIN, name, f"runs:/{run.run_id}/model", flavor="sklearn")
    finally:
        host.close()
    return run, mv


@pytest.fixture
def classifier(hermetic):
    (hermetic / "matih.toml").write_text('[models."*"]\nproduction_approvers = []\n')
    X, y, _ = make_data(3000, seed=1)
    run, mv = train_and_register(hermetic, LogisticRegression(), X, y)
    host = Host(load_config(cwd=hermetic))
    yield host, run, mv
    host.close()


# ---- acceptance -------------------------------------------------------------------------------------
def test_card_shows_metrics_with_intervals_and_fairness_from_data(classifier):
    host, run, mv = classifier
    cards = ModelCards(host)
    X, y, sex = make_data(1500, seed=7)
    doc = cards.evaluate(LOCAL_ADMIN, "churn", mv.version, X, y, protected={"sex": sex},
                         dataset={"name": "holdout-2024-07"})
    card = cards.card(LOCAL_ADMIN, "churn", mv.version)
    ev = card["evaluation"]
    assert ev == doc and ev["task"] == "classification" and ev["positive_label"] == 1
    model = pickle.loads(host.artifacts.get(f"default/{mv.storage_location.split(':/', 1)[1]}/model.pkl"))
    pred, proba = model.predict(X), model.predict_proba(X)[:, 1]
    expected = {"accuracy": skm.accuracy_score(y, pred), "precision": skm.precision_score(y, pred),
                "recall": skm.recall_score(y, pred), "f1": skm.f1_score(y, pred),
                "roc_auc": skm.roc_auc_score(y, proba)}
    for key, value in expected.items():
        m = ev["metrics"][key]
        assert m["value"] == pytest.approx(value, abs=1e-12), key  # computed from the data, not a placeholder
        assert m["ci_low"] < m["value"] < m["ci_high"], key  # the interval holds the estimate
        assert m["ci_high"] - m["ci_low"] < 0.1 and m["n_resamples"] == 1000
    fair = ev["fairness"]["sex"]
    for group in ("a", "b"):
        mask = sex == group
        g = fair["groups"][group]
        assert g["count"] == mask.sum()
        assert g["metrics"]["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]))
        assert g["metrics"]["recall"]["value"] == pytest.approx(skm.recall_score(y[mask], pred[mask]))
        assert g["metrics"]["selection_rate"]["value"] == pytest.approx(pred[mask].mean())
        assert g["metrics"]["accuracy"]["ci_low"] <= g["metrics"]["accuracy"]["value"] <= \
            g["metrics"]["accuracy"]["ci_high"]
    rates = [pred[sex == g].mean() for g in ("a", "b")]
    assert fair["demographic_parity_difference"]["value"] == pytest.approx(max(rates) - min(rates))
    assert fair["demographic_parity_difference"]["value"] > 0.05  # group b is selected more often: found
    # the card says what it was computed on, and the training data comes from the run
    assert ev["dataset"]["n_samples"] == 1500 and ev["dataset"]["name"] == "holdout-2024-07"
    assert ev["dataset"]["digest"].startswith("sha256:")
    [train] = card["training_data"]
    assert (train["uri"], train["version"], train["digest"]) == ("s3://bucket/churn/train.parquet", "v3",
                                                                 "sha256:ab12")
    assert train["date_range"] == {"start": "2024-01-01", "end": "2024-06-30"} and train["quality_score"] == 0.97
    assert card["training_run"]["metrics"]["training_accuracy"] > 0.6
    # stored as an artifact the version references
    assert mv.version == 1 and Registry(host).get_version(LOCAL_ADMIN, "churn", 1).tags[
        "matih.card.evaluation"].startswith("_cards/churn/v1/evaluation-")


def test_interval_narrows_with_more_data(classifier):
    host, _, mv = classifier
    cards = ModelCards(host)
    widths = []
    for n in (200, 5000):
        X, y, _ = make_data(n, seed=11)
        ev = cards.evaluate(LOCAL_ADMIN, "churn", mv.version, X, y)
        widths.append({k: m["ci_high"] - m["ci_low"] for k, m in ev["metrics"].items()})
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert widths[1][key] < widths[0][key] / 2.5, key  # ~ 1/sqrt(n): 5x narrower for 25x the data


# ---- the statistics, by hand ---------------------------------------------------------------------------
def test_fairness_equals_hand_computation():
    #          group a       group b
    y = [1, 1, 0, 0, 1, 0, 0, 0]
    pred = [1, 0, 1, 0, 1, 1, 1, 0]
    group = ["a"] * 4 + ["b"] * 4
    ev = evaluate_predictions(y, pred, protected={"group": group}, n_resamples=200)
    fair = ev["fairness"]["group"]
    a, b = fair["groups"]["a"]["metrics"], fair["groups"]["b"]["metrics"]
    # a: TP=1 FN=1 FP=1 TN=1      b: TP=1 FN=0 FP=2 TN=1
    assert a["selection_rate"]["value"] == 0.5 and b["selection_rate"]["value"] == 0.75
    assert a["true_positive_rate"]["value"] == 0.5 and b["true_positive_rate"]["value"] == 1.0
    assert a["false_positive_rate"]["value"] == 0.5 and b["false_positive_rate"]["value"] == pytest.approx(2 / 3)
    assert a["accuracy"]["value"] == 0.5 and b["accuracy"]["value"] == 0.5
    assert a["precision"]["value"] == 0.5 and b["precision"]["value"] == pytest.approx(1 / 3)
    assert a["f1"]["value"] == 0.5 and b["f1"]["value"] == pytest.approx(0.5)  # 2*1 / (2*1 + 2 + 0)
    # fairlearn's definitions: max - min selection rate; max of the TPR and FPR differences
    assert fair["demographic_parity_difference"]["value"] == pytest.approx(0.25)
    assert fair["true_positive_rate_difference"]["value"] == pytest.approx(0.5)
    assert fair["false_positive_rate_difference"]["value"] == pytest.approx(2 / 3 - 0.5)
    assert fair["equalized_odds_difference"]["value"] == pytest.approx(0.5)
    assert fair["groups"]["a"]["count"] == 4 and fair["groups"]["b"]["share"] == 0.5
    # and overall: TP=2 FP=3 FN=1 TN=2
    m = ev["metrics"]
    assert m["accuracy"]["value"] == 0.5 and m["precision"]["value"] == 0.4 and m["recall"]["value"] == pytest.approx(
        2 / 3)


def test_fairness_is_zero_when_groups_are_treated_alike():
    y = [1, 0, 1, 0]
    pred = [1, 0, 1, 0]
    fair = evaluate_predictions(y, pred, protected={"g": ["x", "x", "y", "y"]}, n_resamples=50)["fairness"]["g"]
    assert fair["demographic_parity_difference"]["value"] == 0
    assert fair["equalized_odds_difference"]["value"] == 0


def test_metrics_match_scikit_learn_for_multiclass_and_regression():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    P = rng.dirichlet([1, 1, 1], 500)
    P[np.arange(500), y] += 0.6
    P /= P.sum(axis=1, keepdims=True)
    pred = P.argmax(axis=1)
    ev = evaluate_predictions(y, pred, scores=P, n_resamples=100)
    assert ev["metrics"]["precision"]["value"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert ev["metrics"]["f1"]["value"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert ev["metrics"]["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"))
    yr = rng.normal(size=300)
    pr = yr + rng.normal(0, 0.3, 300)
    reg = evaluate_predictions(yr, pr, n_resamples=100)["metrics"]
    assert reg["r2"]["value"] == pytest.approx(skm.r2_score(yr, pr))
    assert reg["mae"]["value"] == pytest.approx(skm.mean_absolute_error(yr, pr))
    assert reg["mse"]["value"] == pytest.approx(skm.mean_squared_error(yr, pr))


def test_weighted_auc_handles_ties_like_scikit_learn():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.3, 0.9, 0.1])
    ev = evaluate_predictions(y, (s > 0.4).astype(int), scores=s, n_resamples=10)
    assert ev["metrics"]["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, s))


def test_bootstrap_is_seeded_and_resamples_rows():
    a = np.vstack(list(resample_counts(50, 30, seed=5)))
    b = np.vstack(list(resample_counts(50, 30, seed=5)))
    assert a.shape == (30, 50) and (a == b).all() and (a.sum(axis=1) == 50).all()
    assert not (np.vstack(list(resample_counts(50, 30, seed=6))) == a).all()
    y, pred = [1, 0] * 20, [1, 0] * 19 + [0, 1]
    assert evaluate_predictions(y, pred, seed=1) == evaluate_predictions(y, pred, seed=1)


def test_bad_evaluation_input_is_refused():
    with pytest.raises(InvalidInput):
        evaluate_predictions([1, 0, 1], [1, 0])
    with pytest.raises(InvalidInput):
        evaluate_predictions([1, 0], [1, 0], protected={"g": ["a"]})
    with pytest.raises(InvalidInput):
        evaluate_predictions([1, 0], [1, 0], n_resamples=0)
    with pytest.raises(InvalidInput):
        evaluate_predictions([1.0, float("nan")], [1.0, 0.0])


# ---- renderings and edits ------------------------------------------------------------------------------
def test_card_renders_as_markdown_html_and_json(classifier):
    host, _, mv = classifier
    cards = ModelCards(host)
    X, y, sex = make_data(400, seed=2)
    cards.evaluate(LOCAL_ADMIN, "churn", 1, X, y, protected={"sex": sex})
    card = cards.card(LOCAL_ADMIN, "churn", 1)
    md = cards.render(LOCAL_ADMIN, "churn", 1, "md")
    acc = card["evaluation"]["metrics"]["accuracy"]
    assert md.startswith("# Model card: churn v1")
    for section in ("## Intended use", "## Training data", "## Performance", "## Fairness", "### sex",
                    "## Limitations", "## Deployment history", "## Lineage"):
        assert section in md, section
    assert f"| accuracy | {acc['value']:.4f} | [{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] |" in md
    assert "demographic parity difference" in md and "s3://bucket/churn/train.parquet" in md
    page = cards.render(LOCAL_ADMIN, "churn", 1, "html")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert f"{acc['value']:.4f}" in page and "equalized odds difference" in page
    assert json.loads(cards.render(LOCAL_ADMIN, "churn", 1, "json"))["evaluation"]["metrics"]["accuracy"] == acc
    with pytest.raises(InvalidInput):
        cards.render(LOCAL_ADMIN, "churn", 1, "pdf")
    # before any evaluation, the card says so instead of inventing numbers
    fresh = dict(card, evaluation=None)
    assert "Not evaluated yet" in render_markdown(fresh) and "Not evaluated yet" in render_html(fresh)


def test_edits_persist_and_html_is_escaped(classifier):
    host, _, mv = classifier
    cards = ModelCards(host)
    cards.edit(LOCAL_ADMIN, "churn", 1, description="Predicts churn | monthly",
               intended_use="Rank accounts for retention calls.",
               limitations="<script>alert('x')</script> Trained on 2024 H1 only.")
    cards.edit(LOCAL_ADMIN, "churn", 1, ethical_considerations="Do not use for pricing.")
    again = ModelCards(Host(load_config(cwd=host.config.base_dir)))
    try:
        card = again.card(LOCAL_ADMIN, "churn", 1)
    finally:
        again.host.close()
    assert card["description"] == "Predicts churn | monthly"
    assert card["intended_use"] == "Rank accounts for retention calls."
    assert card["limitations"].startswith("<script>") and card["ethical_considerations"] == "Do not use for pricing."
    assert card["text_updated"]["by"] == LOCAL_ADMIN.user
    assert Registry(host).get_version(LOCAL_ADMIN, "churn", 1).description == "Predicts churn | monthly"
    page = render_html(card)
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script>" not in render_markdown(card)
    cards.edit(LOCAL_ADMIN, "churn", 1, limitations="")
    assert cards.card(LOCAL_ADMIN, "churn", 1)["limitations"] == ""
    with pytest.raises(InvalidInput):
        cards.edit(LOCAL_ADMIN, "churn", 1, owner="mallory")


def test_deployment_history_shows_promotions_and_rollbacks(classifier, hermetic):
    host, _, _ = classifier
    X, y, _ = make_data(500, seed=4)
    _, mv2 = train_and_register(hermetic, LogisticRegression(C=0.1), X, y)
    registry = Registry(host)
    for version in (1, 2):
        registry.promote(LOCAL_ADMIN, "churn", version, "Staging")
        registry.promote(LOCAL_ADMIN, "churn", version, "Production", reason=f"ship v{version}")
    registry.rollback(LOCAL_ADMIN, "churn", reason="v2 misbehaves")
    card = ModelCards(host).card(LOCAL_ADMIN, "churn", 1)
    hist = card["deployment_history"]
    assert hist["rollbacks"] == 1 and card["model"]["stage"] == "Production"
    moves = [(e["version"], e["from_stage"], e["to_stage"]) for e in hist["events"]
             if e["action"] == "version.transitioned"]
    assert moves == [(1, "Staging", "Production"), (2, "Staging", "Production"), (1, "Production", "Archived"),
                     (1, "Archived", "Production"), (2, "Production", "Archived")]
    assert any(e["action"] == "model.rolled_back" and e["reason"] == "v2 misbehaves" for e in hist["events"])
    md = render_markdown(card)
    assert "1 rollback(s)." in md and "model.rolled_back" in md


def test_regressor_card(hermetic):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.5, 400)
    train_and_register(hermetic, LinearRegression(), X, y, name="price")
    host = Host(load_config(cwd=hermetic))
    try:
        region = np.where(X[:, 0] > 0, "north", "south")
        ev = ModelCards(host).evaluate(LOCAL_ADMIN, "price", 1, X, y, protected={"region": region})
        assert ev["task"] == "regression" and set(ev["metrics"]) == {"mse", "rmse", "mae", "r2"}
        assert ev["metrics"]["r2"]["ci_low"] < ev["metrics"]["r2"]["value"] < ev["metrics"]["r2"]["ci_high"]
        assert set(ev["fairness"]["region"]["groups"]) == {"north", "south"}
        assert "demographic_parity_difference" not in ev["fairness"]["region"]
    finally:
        host.close()


def test_models_outside_the_registry_artifacts_are_never_registered_so_never_unpickled(classifier):
    host, _, _ = classifier
    with pytest.raises(InvalidInput, match="is not a run, logged model or artifact of tenant"):
        Registry(host).register_version(LOCAL_ADMIN, "external", "s3://elsewhere/model.pkl", flavor="sklearn")


# ---- REST ------------------------------------------------------------------------------------------------
def test_rest_card_edit_and_evaluate(classifier):
    host, run, mv = classifier
    from matih_lite.service import create_app

    X, y, sex = make_data(600, seed=9)
    with TestClient(create_app(Host(load_config(cwd=host.config.base_dir)))) as client:
        base = "/api/v1/models/churn/versions/1"
        body = {"X": {"columns": ["x1", "x2", "sex"], "data": [[a, b, s] for (a, b), s in zip(X.tolist(), sex)]},
                "y": y.tolist(), "protected": ["sex"], "n_resamples": 300}
        # the model was fitted on two columns: a column it does not know is the caller's mistake
        r = client.post(f"{base}/evaluate", json=body)
        assert r.status_code == 400 and "cannot predict" in r.json()["detail"]
        body = {"X": X.tolist(), "y": y.tolist(), "protected": {"sex": sex.tolist()}, "n_resamples": 300,
                "dataset": {"name": "holdout"}}
        r = client.post(f"{base}/evaluate", json=body)
        assert r.status_code == 200, r.text
        ev = r.json()
        assert ev["bootstrap"]["n_resamples"] == 300 and set(ev["fairness"]["sex"]["groups"]) == {"a", "b"}
        r = client.patch(f"{base}/card", json={"intended_use": "Retention outreach", "limitations": "H1 only"})
        assert r.status_code == 200 and r.json()["intended_use"] == "Retention outreach"
        card = client.get(f"{base}/card").json()
        assert card["limitations"] == "H1 only" and card["evaluation"]["dataset"]["name"] == "holdout"
        md = client.get(f"{base}/card", params={"format": "md"})
        assert md.headers["content-type"].startswith("text/markdown") and "Retention outreach" in md.text
        page = client.get(f"{base}/card", params={"format": "html"})
        assert page.headers["content-type"].startswith("text/html") and "<h2>Fairness</h2>" in page.text
        assert client.get(f"{base}/card", params={"format": "pdf"}).status_code == 400
        assert client.get("/api/v1/models/churn/versions/99/card").status_code == 404
        assert client.patch(f"{base}/card", json={"owner": "x"}).status_code == 400
        assert client.post(f"{base}/evaluate", json={"X": [[1.0, 2.0]], "y": [1, 0]}).status_code == 400
        # registered through the service: lineage links the version to its run and data, and the card shows it
        r = client.post("/api/v1/models/churn/versions", json={"source": f"runs:/{run.run_id}/model"})
        assert r.status_code in (200, 201) and r.json()["version"] == 2
        up = client.get("/api/v1/lineage/upstream", params={"key": "model:churn/2"}).json()
        assert [n["key"] for n in up["nodes"]] == ["model:churn/2", f"run:{run.run_id}",
                                                   "dataset:s3://bucket/churn/train.parquet@v3"]
        card2 = client.get("/api/v1/models/churn/versions/2/card").json()
        assert card2["training_data"][0]["lineage_key"] == "dataset:s3://bucket/churn/train.parquet@v3"
        assert [n["key"] for n in card2["lineage"]["upstream"]["nodes"]][0] == "model:churn/2"


# ---- CLI -------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, monkeypatch):
    from matih_lite.cli import main

    monkeypatch.setenv("COLUMNS", "220")

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_info.value.code or 0, out, err

    return invoke


def test_cli_evaluate_card_and_edit(classifier, cli, hermetic):
    import pandas as pd

    X, y, sex = make_data(500, seed=5)
    pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "sex": sex, "churned": y}).to_csv(hermetic / "holdout.csv",
                                                                                  index=False)
    code, out, err = cli("models", "evaluate", "churn", "1", "--data", "holdout.csv", "--target", "churned",
                         "--protected", "sex", "--resamples", "200", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["dataset"]["name"] == "holdout.csv" and ev["n_samples"] == 500
    assert set(ev["fairness"]["sex"]["groups"]) == {"a", "b"}
    code, out, _ = cli("models", "evaluate", "churn", "1", "--data", "holdout.csv", "--target", "churned",
                       "--protected", "sex", "--resamples", "200")
    assert code == 0 and "demographic parity difference" in out and "roc_auc" in out
    (hermetic / "limits.md").write_text("Not for accounts younger than 30 days.\n")
    code, out, _ = cli("models", "card-edit", "churn", "1", "--intended-use", "Retention calls",
                       "--from-file", "limitations=limits.md")
    assert code == 0 and "intended use" in out
    code, out, _ = cli("models", "card", "churn", "1")
    assert code == 0 and "# Model card: churn v1" in out and "Retention calls" in out
    assert "Not for accounts younger than 30 days." in out and "| accuracy |" in out
    code, _, err = cli("models", "card", "churn", "1", "--format", "html", "-o", "card.html")
    assert code == 0 and (hermetic / "card.html").read_text().startswith("<!DOCTYPE html>")
    code, out, _ = cli("models", "card", "churn", "1", "--format", "json")
    assert code == 0 and json.loads(out)["intended_use"] == "Retention calls"
    code, _, err = cli("models", "card", "churn", "7")
    assert code == 1 and "error" in err
    code, _, err = cli("models", "card-edit", "churn", "1")
    assert code == 2 and "nothing to edit" in err
    code, _, err = cli("models", "evaluate", "churn", "1", "--data", "holdout.csv", "--target", "nope")
    assert code == 2 and "no column 'nope'" in err


def test_card_client_over_http(classifier, monkeypatch):


    from matih_lite.registry.cards import CardClient

    host, _, _ = classifier
    service = ServiceThread(Host(load_config(cwd=host.config.base_dir))).start()
    try:
        monkeypatch.setenv("MATIH_URL", service.url)
        import pandas as pd

        X, y, sex = make_data(300, seed=8)
        with CardClient() as client:
            ev = client.evaluate("churn", 1, pd.DataFrame(X), pd.Series(y), protected={"sex": sex},
                                 n_resamples=200)
            assert ev["fairness"]["sex"]["demographic_parity_difference"]["value"] is not None
            client.edit("churn", 1, intended_use="Over HTTP")
            md = client.card("churn", 1, "md")
            assert "Over HTTP" in md and "| roc_auc |" in md
            assert json.loads(client.card("churn", 1, "json"))["intended_use"] == "Over HTTP"
            with pytest.raises(NotFound, match="no version 9"):
                client.card("churn", 9)
    finally:
        service.stop()


def test_another_tenant_sees_no_card(classifier):
    from matih_lite.identity import Principal

    host, _, _ = classifier
    cards = ModelCards(host)
    X, y, _ = make_data(100, seed=3)
    cards.evaluate(LOCAL_ADMIN, "churn", 1, X, y, n_resamples=50)
    intruder = Principal("other", "mallory", ("admin",))
    with pytest.raises(NotFound):
        cards.card(intruder, "churn", 1)
    with pytest.raises(NotFound):
        cards.edit(intruder, "churn", 1, limitations="mine now")
    with pytest.raises(NotFound):
        cards.evaluate(intruder, "churn", 1, X, y)
    assert cards.card(LOCAL_ADMIN, "churn", 1)["limitations"] == ""
