"""The workbench in a real Chromium: the daily loop by mouse and by keyboard, at 1280 and 390 pixels.

Runs are logged through the SDK; then the tests click through the pages as a person would and check
what the page shows. Every test fails on a console error (see conftest.py), and keeps a screenshot
of each page it opened when it fails.
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from conftest import NARROW, WIDE
from ui_helpers import drifting_deployment, pending_production

pytestmark = pytest.mark.slow


def sign_in(tab, token: str, then: str = "/ui/models") -> None:
    """Sign in through the form, as a person does."""
    tab.open(f"/ui/login?next={then}")
    tab.page.fill("#token", token)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url(f"**{then}")
    tab.shot("signed-in")


def test_from_the_experiment_to_its_runs_to_a_comparison_marking_exactly_the_differing_params(shared, tabs):
    _, url, runs = shared
    tab = tabs(url)
    page = tab.page
    tab.open("/ui")
    page.click("a.exp-link:text('churn')")
    page.wait_for_selector("#runs-table")
    tab.shot("runs")
    assert page.locator("#runs-table tbody tr").count() == 4
    page.check(f"input[name=runs][value='{runs['a']}']")
    page.check(f"input[name=runs][value='{runs['b']}']")
    assert page.inner_text("#selection-count") == "2 selected"
    page.click("#compare-button")
    page.wait_for_url(re.compile(r"/ui/compare\?runs="))
    page.wait_for_selector("#parallel svg")
    tab.shot("compare")
    assert sorted(page.url.split("runs=")[1].split(",")) == sorted([runs["a"], runs["b"]])
    marked = page.eval_on_selector_all("tbody.params td.differs",
                                       "cells => cells.map(c => c.parentElement.dataset.key)")
    assert marked == ["params.lr", "params.lr"]  # exactly lr, in both runs' cells
    same = page.eval_on_selector_all("tbody.params tr.same-row", "rows => rows.map(r => r.dataset.key)")
    assert same == ["params.depth", "params.model"]
    assert page.locator("td.best").count() == 2  # auc and loss each mark their best run
    page.click("#diff-toggle")
    assert not page.is_visible("tr[data-key='params.depth']") and page.is_visible("tr[data-key='params.lr']")
    assert "diff=1" in page.url  # the toggle is part of the shareable URL
    page.wait_for_selector(".chart-plot svg .series-dot")
    assert page.locator(".chart-plot svg polyline.series-line").count() == 2  # one line per run, overlaid
    page.select_option("#metric-pick", "loss")  # another metric: the page reloads with it
    page.wait_for_url(re.compile(r"metric=loss"))
    page.wait_for_selector(".chart-plot svg polyline.series-line")
    assert "metric=loss" in page.url and "diff=1" in page.url


def test_a_lead_approves_a_pending_production_request_and_sees_the_stage_change(secured, tabs):
    host, url, tokens = secured
    pending = pending_production(host, "churn-browser")
    tab = tabs(url)
    page = tab.page
    sign_in(tab, tokens["lee"])
    row = page.locator(f"#pending-approvals tr[data-approval='{pending['approval_id']}']")
    row.locator("input[name=comment]").first.fill("auc is up, ship it")
    row.locator("button[data-action=approve]").click()
    page.wait_for_selector(".flash")
    tab.shot("approved")
    assert "approved: version 2 of churn-browser is in Production" in page.inner_text(".flash")
    assert page.locator(f"#pending-approvals tr[data-approval='{pending['approval_id']}']").count() == 0
    tab.open("/ui/models/churn-browser")
    assert page.get_attribute("#versions tr[data-version='2'] [data-stage]", "data-stage") == "Production"
    assert page.get_attribute("#versions tr[data-version='1'] [data-stage]", "data-stage") == "Archived"
    assert "approval.approved" in page.inner_text("#audit")


def test_a_viewer_finds_no_approve_button(secured, tabs):
    host, url, tokens = secured
    pending = pending_production(host, "churn-seen")
    tab = tabs(url)
    page = tab.page
    sign_in(tab, tokens["vic"])
    row = page.locator(f"#pending-approvals tr[data-approval='{pending['approval_id']}']")
    assert row.count() == 1 and "awaiting an approver" in row.inner_text()
    assert page.locator("button[data-action=approve]").count() == 0
    tab.open("/ui/models/churn-seen")
    assert page.locator("button[data-action]").count() == 0  # no promote, rollback, approve or reject


def test_a_drift_report_shows_the_drifting_feature_first(platform, served, tabs):
    name = drifting_deployment(platform)
    tab = tabs(served)
    page = tab.page
    tab.open(f"/ui/deployments/{name}/drift")
    assert "No window has been checked yet" in page.inner_text("main")
    page.select_option("#check-window", "1h")
    page.click("button[data-action=check]")
    page.wait_for_selector("table.drift-features")
    tab.shot("report")
    features = page.eval_on_selector_all("table.drift-features tbody tr", "rows => rows.map(r => r.dataset.feature)")
    drifting = page.eval_on_selector_all("table.drift-features tr.drifting", "rows => rows.map(r => r.dataset.feature)")
    assert features[0] == "age" and drifting == ["age"]
    assert page.locator("figure.hist.drifting").count() == 1
    assert page.inner_text("figure.hist.drifting figcaption").startswith("age")
    assert "1h" in page.inner_text("#windows")


def test_every_page_works_at_1280_and_390_pixels_without_console_errors(shared, tabs):
    _, url, runs = shared
    exp = runs["experiment"]
    paths = ["/ui", f"/ui/experiments/{exp}", f"/ui/runs/{runs['a']}", f"/ui/runs/{runs['a']}/artifacts",
             f"/ui/runs/{runs['a']}/artifacts?path=config.json",
             f"/ui/runs/{runs['a']}/artifacts?path=notes/readme.txt",
             f"/ui/compare?runs={runs['a']},{runs['b']},{runs['c']}", "/ui/models", "/ui/approvals",
             "/ui/deployments", "/ui/lineage", f"/ui/lineage?key=run:{runs['a']}", "/ui/jobs", "/ui/features",
             "/ui/login"]
    for viewport in (WIDE, NARROW):
        tab = tabs(url, viewport)
        for path in paths:
            tab.open(path)
            overflow = tab.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{path} at {viewport['width']} px scrolls sideways by {overflow} px"
            assert tab.page.is_visible("main h1"), path
            nav = tab.page.locator("header nav a")
            assert nav.count() >= 5 and all(nav.nth(i).is_visible() for i in range(nav.count())), path
        tab.expect_console_error(r"404")  # the missing page below answers 404 on purpose
        tab.open("/ui/runs/ffffffffffffffffffffffffffffffff", status=404)
        assert "Not found" in tab.page.inner_text("h1")


def test_the_registry_serving_feature_and_job_pages_work_at_both_widths(platform, served, tabs):
    from pathlib import Path

    from matih_lite.contracts.jobs import Job
    from matih_lite.identity import LOCAL_ADMIN
    from matih_lite.monitoring.service import Monitoring
    from matih_lite.testing.features import CUSTOMER, DAY, T0
    from matih_lite.testing.features import Platform as FeaturePlatform

    name = drifting_deployment(platform)
    Monitoring(platform).check(LOCAL_ADMIN, name, "1h")
    repo = Path(platform.config.path).parent / "features"
    repo.mkdir()
    (repo / "customer.toml").write_text(CUSTOMER)
    features = FeaturePlatform(platform, repo)
    features.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2)])
    features.apply()
    now = int(time.time() * 1000)
    platform.metadata.create_job(Job(tenant="default", job_id="b" * 32, name="train-churn", kind="train",
                                     status="FAILED", spec={"entrypoint": "train:fit"}, created_by="local",
                                     created_at=now, ended_at=now, message="exit code 1"))
    paths = ["/ui/models/churn", "/ui/models/churn/versions/1", "/ui/deployments", f"/ui/deployments/{name}",
             f"/ui/deployments/{name}/drift", "/ui/features", "/ui/features/customer_stats", "/ui/features/churn_v1",
             "/ui/jobs", "/ui/jobs/" + "b" * 32, f"/ui/lineage?key=deployment:{name}"]
    for viewport in (WIDE, NARROW):
        tab = tabs(served, viewport)
        for path in paths:
            tab.open(path)
            overflow = tab.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{path} at {viewport['width']} px scrolls sideways by {overflow} px"
            assert tab.page.is_visible("main h1"), path
    assert tab.page.locator("#lineage-svg g.node").count() >= 2  # the deployment and its model version


def test_the_daily_loop_works_by_keyboard(shared, tabs):
    _, url, runs = shared
    tab = tabs(url)
    page = tab.page
    tab.open("/ui")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    page.locator("a.exp-link").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#runs-table")
    for key in ("a", "b"):
        page.focus(f"input[name=runs][value='{runs[key]}']")
        page.keyboard.press("Space")
    page.focus("#compare-button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/compare"))
    page.focus("#diff-toggle")
    page.keyboard.press("Enter")
    assert page.get_attribute("#diff-toggle", "aria-pressed") == "true"
    page.select_option("#metric-pick", "loss")
    page.wait_for_selector(".chart-plot svg polyline.series-line")
    page.focus(".chart-plot")
    page.keyboard.press("End")
    assert page.inner_text(".chart-readout").startswith("step 199")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text(".chart-readout").startswith("step 198")
    page.focus("#parallel")
    page.keyboard.press("ArrowDown")
    assert page.inner_text("#parallel-readout").startswith("run-")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible


def test_metric_charts_switch_axes_scale_and_smoothing_and_show_values_on_hover(shared, tabs):
    _, url, runs = shared
    tab = tabs(url)
    page = tab.page
    tab.open(f"/ui/runs/{runs['b']}")
    chart = page.locator("figure.chart[data-key='loss']")
    chart.locator(".chart-plot svg").wait_for()
    box = chart.locator(".chart-plot svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    assert re.match(r"step \d+ — 0\.5\d*", chart.locator(".chart-readout").inner_text())
    chart.locator(".chart-log").check()
    chart.locator(".chart-plot svg").wait_for()
    chart.locator(".chart-smooth").fill("0.9")
    assert chart.locator("polyline.series-raw").count() == 1  # the raw line stays, faint, under the smoothed one
    chart.locator(".chart-axis").select_option("relative")
    chart.locator(".chart-plot svg").wait_for()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    assert re.search(r"\d+(\.\d+)? (s|min|h) — ", chart.locator(".chart-readout").inner_text())
    toggle = page.locator("button.chart-toggle[data-key='auc']")
    assert toggle.get_attribute("aria-pressed") == "true"  # the first metrics are charted at once
    toggle.click()
    assert page.locator("figure.chart[data-key='auc']").count() == 0 and toggle.get_attribute("aria-pressed") == "false"
    toggle.click()  # and any is charted on demand
    page.locator("figure.chart[data-key='auc'] .chart-plot svg").wait_for()
    tab.shot("charts")


def test_the_links_the_mlflow_client_prints_open_the_workbench(shared, tabs, monkeypatch, capsys):
    import mlflow

    _, url, runs = shared
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    mlflow.set_tracking_uri(url)
    try:
        mlflow.set_experiment("from-mlflow")
        with mlflow.start_run(run_name="printed") as run:
            mlflow.log_param("alpha", 0.5)
    finally:
        mlflow.set_tracking_uri(None)
    printed = capsys.readouterr().out
    run_link = re.search(r"View run printed at: (\S+)", printed).group(1)
    exp_link = re.search(r"View experiment at: (\S+)", printed).group(1)
    assert run_link.startswith(url + "/#/experiments/") and run_link.endswith(run.info.run_id)
    tab = tabs(url)
    tab.page.goto(run_link)
    tab.page.wait_for_url(f"**/ui/runs/{run.info.run_id}")
    assert tab.page.inner_text("h1").startswith("printed")
    tab.page.goto(exp_link)
    tab.page.wait_for_url(re.compile(r"/ui/experiments/\d+$"))
    assert tab.page.inner_text("h1").startswith("from-mlflow")
    for fragment, lands in ((f"/#/experiments/{runs['experiment']}/runs/{runs['a']}/artifacts/config.json",
                             f"/ui/runs/{runs['a']}/artifacts?path=config.json"),
                            ("/#/models", "/ui/models"), ("/#/models/churn/versions/2", "/ui/models/churn/versions/2"),
                            (f'/#/compare-runs?runs=["{runs["a"]}","{runs["b"]}"]',
                             f"/ui/compare?runs={runs['a']},{runs['b']}")):
        tab.expect_console_error("404")  # the model of the second link does not exist here
        tab.page.goto(url + fragment)
        tab.page.wait_for_url(f"**{lands}")
        tab.shot()


def test_a_million_point_metric_draws_without_freezing_the_page(platform, served, tabs):
    from matih_lite.contracts import Metric
    from matih_lite.tracking import Tracking

    tracking = Tracking(platform)
    exp = tracking.get_or_create_experiment("default", "long")
    run = tracking.create_run("default", exp.experiment_id)
    n = 1_000_000
    for start in range(0, n, 1000):
        tracking.log_points("default", run.run_id, [
            Metric("loss", 100.0 if i == 654_321 else 1.0 + (i % 1000) / 1000, 1_700_000_000_000 + i, i)
            for i in range(start, start + 1000)])
    tab = tabs(served)
    page = tab.page
    started = time.monotonic()
    tab.open(f"/ui/runs/{run.run_id}")
    page.locator("figure.chart .chart-plot svg").wait_for(timeout=10_000)
    drawn = time.monotonic() - started
    tab.shot("million")
    band = page.locator("figure.chart polygon.series-band")
    assert band.count() == 1  # downsampled: drawn as each bucket's min-max band
    points = page.eval_on_selector("figure.chart polyline.series-line", "p => p.points.numberOfItems")
    width = page.eval_on_selector("figure.chart .chart-plot", "p => p.clientWidth")
    assert points <= width + 1
    top = page.eval_on_selector("figure.chart polygon.series-band",
                                "p => Math.min(...Array.from(p.points).map(q => q.y))")
    axis_top = page.eval_on_selector_all("figure.chart .axis text", "ts => ts.map(t => t.textContent)")
    assert any(t in ("100", "90", "80") for t in axis_top), axis_top  # the spike sets the scale: it is drawn
    assert top < 20  # and reaches the top of the plot
    assert drawn < 10, f"the chart took {drawn:.1f} s"
    start = time.monotonic()
    assert page.evaluate("1 + 1") == 2 and time.monotonic() - start < 1  # the page still answers at once
    print(f"million-point chart drawn {drawn:.2f} s after navigation", file=sys.stderr)


def test_a_jobs_log_is_tailed_live_and_a_tunes_best_trial_is_marked(platform, served, tabs):
    from matih_lite.contracts import Metric
    from matih_lite.contracts.jobs import Job
    from matih_lite.tracking import Tracking

    tracking = Tracking(platform)
    exp = tracking.get_or_create_experiment("default", "tuning")
    parent = tracking.create_run("default", exp.experiment_id, name="tune-parent")
    for i, (lr, loss) in enumerate(((0.1, 0.52), (0.01, 0.31), (0.3, 0.77))):
        child = tracking.create_run("default", exp.experiment_id, name=f"trial-{i}", parent_run_id=parent.run_id,
                                    start_time=1_000 + i)
        tracking.log_batch("default", child.run_id, params={"lr": str(lr)}, metrics=[Metric("val_loss", loss, 1, 3)])
    now = int(time.time() * 1000)
    job = Job(tenant="default", job_id="a" * 32, name="tune-churn", kind="tune", status="RUNNING",
              spec={"entrypoint": "train:fit", "tune": {"metric": "val_loss", "mode": "min",
                                                        "space": {"lr": {"loguniform": [0.001, 0.5]}}}},
              created_by="local", created_at=now, started_at=now, heartbeat_at=now + 3_600_000,
              run_id=parent.run_id, message="3 of 3 trials running")
    platform.metadata.create_job(job)
    compute = platform.backend("compute")
    log_file = compute.log_path(job.job_id)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("trial 0 started\n")
    tab = tabs(served)
    page = tab.page
    tab.open("/ui/jobs")
    page.click("a:text('tune-churn')")
    page.wait_for_selector("#trials")
    best = page.locator("#trials tr.best-row")
    assert best.count() == 1 and "trial-1" in best.inner_text() and "★ best" in best.inner_text()
    assert "trial 0 started" in page.inner_text("#job-log")
    with log_file.open("a") as handle:
        handle.write("trial 1 reported val_loss=0.31\n")
    page.locator("#job-log:has-text('val_loss=0.31')").wait_for(timeout=10_000)
    tab.shot("tailed")
    platform.metadata.update_job("default", job.job_id, status="SUCCEEDED", ended_at=int(time.time() * 1000),
                                 message="best trial trial-1")
    page.locator("#job-status .badge:text-is('SUCCEEDED')").wait_for(timeout=10_000)
    assert page.inner_text("#job-message") == "best trial trial-1"


def test_a_captured_run_and_every_kind_of_artifact_preview_work_at_both_widths(served, hermetic, tabs, monkeypatch):
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    import matih_lite as ml

    git = ["git", "-c", "user.name=ann", "-c", "user.email=ann@example.invalid"]
    (hermetic / "train.py").write_text("print('fit')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "train.py"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *args], cwd=hermetic, check=True)
    (hermetic / "train.py").write_text("print('fit harder')\n")  # an uncommitted change: the run keeps its diff
    files = hermetic / "files"
    (files / "model").mkdir(parents=True)
    (files / "data.csv").write_text("age,plan\n41,pro\n37,basic\n")
    pq.write_table(pa.table({"age": list(range(80)), "plan": ["pro"] * 80}), files / "table.parquet")
    (files / "plot.png").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
        b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    (files / "model" / "MLmodel").write_text("artifact_path: model\nflavors:\n  sklearn:\n    sklearn_version: 1.5\n")
    (files / "blob.bin").write_bytes(b"\x00\x01\x02")
    monkeypatch.setenv("MATIH_URL", served)
    with ml.start_run(experiment="captured", run_name="captured-run") as run:  # capture on: environment and git
        ml.log_param("lr", 0.1)
        ml.log_artifacts(str(files))
        ml.log_dict({"threshold": 0.5}, "config.yaml")
    ml.flush()
    base = f"/ui/runs/{run.run_id}"
    previews = {"data.csv": "table", "table.parquet": "table", "plot.png": "img.preview-image",
                "model/MLmodel": "code", "config.yaml": "pre.preview", "environment/git.diff": "pre.preview",
                "blob.bin": "main a[href*='/artifact?']"}
    for viewport in (WIDE, NARROW):
        tab = tabs(served, viewport)
        page = tab.page
        tab.open(base)
        assert page.locator("#h-git").is_visible() and "matih.git.commit" in page.inner_text("main")
        page.click("a:text('Uncommitted changes (git.diff)')")
        page.wait_for_selector("pre.preview")
        assert "fit harder" in page.inner_text("pre.preview")
        tab.open(base)
        page.click("a:text('Installed packages')")
        page.wait_for_url(f"**{base}/environment")
        assert re.search(r"(?m)^pytest==", page.inner_text("pre.preview"))
        for path, shown in previews.items():
            tab.open(f"{base}/artifacts?path={path}")
            assert page.locator(shown).first.is_visible(), path
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{path} at {viewport['width']} px scrolls sideways by {overflow} px"
        tab.open(f"{base}/artifacts?path=plot.png")
        assert page.eval_on_selector("img.preview-image", "i => i.complete && i.naturalWidth") == 1
