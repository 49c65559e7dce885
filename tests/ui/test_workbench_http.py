"""The workbench over HTTP (no browser): pages, sign-in and sessions, CSRF, roles, tenants, refusals, previews.

The browser tests (test_browser.py) drive the same pages in Chromium; these check what a page answers
and what a write refuses, fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import httpx
from ui_helpers import csrf_of, log_runs, pending_production, servable_versions

from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.tracking import Tracking

PAGE_LIMIT = 200 * 1024


def html_text(page: str) -> str:
    import html

    return html.unescape(page)


def client(url: str, **kw) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=False, timeout=30, **kw)


@contextlib.contextmanager
def signed_in(url: str, token: str):
    """A client with the session cookie of a sign-in with ``token``."""
    with client(url) as c:
        r = c.post("/ui/login", data={"token": token, "next": "/ui/models"})
        assert r.status_code == 303, r.text
        yield c


# ---- pages ---------------------------------------------------------------------------------------------
def test_every_page_is_html_with_a_strict_csp_and_under_200_kb(shared):
    _, url, runs = shared
    exp = runs["experiment"]
    with client(url) as c:
        pages = ["/", "/ui", f"/ui/experiments/{exp}", f"/ui/experiments/{exp}?order=metrics.auc%20DESC",
                 f"/ui/runs/{runs['a']}", f"/ui/runs/{runs['a']}/artifacts",
                 f"/ui/runs/{runs['a']}/artifacts?path=config.json", f"/ui/compare?runs={runs['a']},{runs['b']}",
                 "/ui/models", "/ui/approvals", "/ui/deployments", "/ui/lineage", "/ui/jobs", "/ui/login"]
        for path in pages:
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert len(r.content) < PAGE_LIMIT, (path, len(r.content))
            assert "<script>" not in r.text  # no inline script: the CSP would refuse it
        for asset in ("workbench.js", "workbench.css", "links.js"):
            r = c.get(f"/ui/static/{asset}")
            assert r.status_code == 200 and len(r.content) < 64 * 1024
            assert "max-age" in r.headers["cache-control"]


def test_a_missing_page_or_record_is_an_html_404_not_json(shared):
    with client(shared[1]) as c:
        for path in ("/ui/runs/0123456789abcdef", "/ui/models/nope", "/ui/experiments/999", "/ui/no/such/page"):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
            assert "Not found" in r.text
        r = c.get("/ui/api/series?runs=nope&key=loss")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_root_serves_the_page_that_reads_mlflow_fragments(shared):
    with client(shared[1]) as c:
        r = c.get("/")
        assert r.status_code == 200 and "/ui/static/links.js" in r.text
        js = c.get("/ui/static/links.js").text
    for fragment in ("experiments", "runs", "models", "versions", "compare-runs"):
        assert fragment in js


# ---- runs, filter, compare --------------------------------------------------------------------------------
def test_runs_table_sorts_filters_pages_and_chooses_columns(shared):
    _, url, runs = shared
    exp = runs["experiment"]
    with client(url) as c:
        r = c.get(f"/ui/experiments/{exp}", params={"order": "metrics.auc DESC", "cols": "metrics.auc,params.lr"})
        names = re.findall(r'<td class="run-name">.*?<a href="/ui/runs/[0-9a-f]+">([^<]+)</a>', r.text)
        assert names == ["run-c", "run-a", "run-a-fold-1", "run-b"]  # auc 0.93, 0.91, 0.90, 0.89
        assert 'aria-sort="descending"' in r.text
        assert re.findall(r'<th scope="col" class="col-(\w+)"', r.text) == ["metric", "param"]
        r = c.get(f"/ui/experiments/{exp}", params={"filter": "params.model = 'xgb' and metrics.auc > 0.9"})
        assert re.findall(r'<a href="/ui/runs/[0-9a-f]+">(run-[^<]+)</a>', r.text) == ["run-a"]
        page1 = c.get(f"/ui/experiments/{exp}", params={"size": 2, "order": "attributes.run_name ASC"}).text
        assert re.findall(r'>(run-[a-c][^<]*)</a>', page1) == ["run-a", "run-a-fold-1"]
        nxt = re.search(r'href="([^"]+)" rel="next"', page1).group(1).replace("&amp;", "&")
        page2 = c.get(nxt).text
        assert re.findall(r'>(run-[a-c][^<]*)</a>', page2) == ["run-b", "run-c"]
        assert 'rel="prev"' in page2


def test_a_bad_filter_is_shown_with_the_offending_token_marked(shared):
    _, url, runs = shared
    with client(url) as c:
        r = c.get(f"/ui/experiments/{runs['experiment']}", params={"filter": "metrics.auc >> 0.5"})
    assert r.status_code == 200
    assert 'role="alert"' in r.text and 'aria-invalid="true"' in r.text
    echo = re.search(r'<p class="filter-echo mono"[^>]*>(.*?)<mark class="bad-token">([^<]*)</mark>(.*?)</p>', r.text)
    assert echo, "the filter is echoed with the offending token marked"
    assert (echo.group(1), echo.group(2), echo.group(3)) == ("metrics.auc &gt;", "&gt;", " 0.5")


def test_compare_marks_exactly_the_differing_cells_and_the_best_metric(shared):
    _, url, runs = shared
    with client(url) as c:
        r = c.get("/ui/compare", params={"runs": f"{runs['a']},{runs['b']}"})
    assert r.status_code == 200
    rows = dict(re.findall(r'<tr class="(differs-row|same-row)" data-key="([^"]+)"', r.text)[::-1] and
                [(k, cls) for cls, k in re.findall(r'<tr class="(differs-row|same-row)" data-key="([^"]+)"', r.text)])
    assert rows == {"params.depth": "same-row", "params.lr": "differs-row", "params.model": "same-row",
                    "metrics.auc": "differs-row", "metrics.loss": "differs-row"}
    lr_row = r.text.split('data-key="params.lr"')[1].split("</tr>")[0]
    assert lr_row.count('class="differs"') == 2
    depth_row = r.text.split('data-key="params.depth"')[1].split("</tr>")[0]
    assert "differs" not in depth_row.replace("same-row", "")
    auc_row = r.text.split('data-key="metrics.auc"')[1].split("</tr>")[0]
    assert re.search(r'<td class="num differs best">0.91', auc_row)  # run a: the higher auc
    loss_row = r.text.split('data-key="metrics.loss"')[1].split("</tr>")[0]
    assert loss_row.index("best") < loss_row.index("0.5")  # loss: lower is better, run a's cell comes first
    data = json.loads(re.search(r'<script type="application/json" id="parallel-data">(.*?)</script>', r.text,
                                re.DOTALL).group(1))
    assert data["params"] == ["lr"] and data["metric"] == "auc" and len(data["runs"]) == 2
    with client(url) as c:
        assert c.get("/ui/compare", params={"runs": runs["a"]}).status_code == 400
        repeated = c.get("/ui/compare", params=[("runs", runs["a"]), ("runs", runs["b"])])
        assert repeated.status_code == 200  # the no-script form sends runs=A&runs=B
        assert c.get("/ui/compare", params={"runs": ",".join(["f" * 32] * 2)}).status_code == 400
        assert c.get("/ui/compare", params={"runs": f"{runs['a']},{'0' * 32}"}).status_code == 404


def test_compare_differences_only_hides_equal_rows_server_side(shared):
    _, url, runs = shared
    with client(url) as c:
        r = c.get("/ui/compare", params={"runs": f"{runs['a']},{runs['b']}", "diff": "1"})
    assert 'class="grid compare only-diff"' in r.text and 'aria-pressed="true"' in r.text


def test_run_page_shows_params_metrics_tags_nested_runs_and_artifacts(shared):
    _, url, runs = shared
    with client(url) as c:
        r = c.get(f"/ui/runs/{runs['a']}")
        assert r.status_code == 200
        for text in ("run-a", ">lr</th>", "0.1", ">team</th>", "growth", "run-a-fold-1", "config.json", "notes/",
                     'data-key="loss"'):
            assert text in r.text, text
        child = c.get(f"/ui/runs/{runs['a-fold-1']}").text
        assert f'href="/ui/runs/{runs["a"]}"' in child  # the parent


def test_series_api_downsamples_and_keeps_the_spike(shared):
    platform, served, _ = shared
    from matih_lite.contracts import Metric

    tracking = Tracking(platform)
    exp = tracking.get_or_create_experiment("default", "spiky")
    run = tracking.create_run("default", exp.experiment_id)
    points = [Metric("loss", 1.0, 1_000 + i, i) for i in range(20_000)]
    points[12_345] = Metric("loss", 99.0, 1_000 + 12_345, 12_345)
    tracking.log_points("default", run.run_id, points)
    with client(served) as c:
        r = c.get("/ui/api/series", params={"runs": run.run_id, "key": "loss", "points": 300})
        body = r.json()["series"][0]
        assert body["points"] == 20_000 and body["downsampled"] and len(body["x"]) <= 300
        assert max(body["max"]) == 99.0 and min(body["min"]) == 1.0
        zoom = c.get("/ui/api/series", params={"runs": run.run_id, "key": "loss", "lo": 12_000, "hi": 12_999}).json()
        assert zoom["series"][0]["points"] == 1000
        bad = c.get("/ui/api/series", params={"runs": run.run_id, "key": "loss", "axis": "epoch"})
        assert bad.status_code == 400 and "axis" in bad.json()["detail"]


# ---- artifacts ------------------------------------------------------------------------------------------
def test_artifact_browser_previews_text_json_csv_parquet_images_and_mlmodel(shared):
    platform, served, _ = shared
    import pyarrow as pa
    import pyarrow.parquet as pq

    tracking = Tracking(platform)
    exp = tracking.get_or_create_experiment("default", "files")
    run = tracking.create_run("default", exp.experiment_id)
    buf = io.BytesIO()
    pq.write_table(pa.table({"age": list(range(100)), "plan": ["pro"] * 100}), buf)
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
           b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    files = {"notes.txt": b"line <one>\n", "metrics.json": b'{"auc":0.9,"n":[1,2]}', "data.csv": b"a,b\n1,x\n2,y\n",
             "table.parquet": buf.getvalue(), "plot.png": png, "model/MLmodel":
             b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: x\n  sklearn:\n    v: 1\n",
             "page.html": b"<script>alert(1)</script>", "blob.bin": b"\x00\x01\x02"}
    for path, data in files.items():
        tracking.log_artifact("default", run.run_id, path, data)
    base = f"/ui/runs/{run.run_id}"
    with client(served) as c:
        text = c.get(f"{base}/artifacts", params={"path": "notes.txt"}).text
        assert "line &lt;one&gt;" in text
        pretty = html_text(c.get(f"{base}/artifacts", params={"path": "metrics.json"}).text)
        assert '{\n  "auc": 0.9,\n  "n": [' in pretty
        csv_page = c.get(f"{base}/artifacts", params={"path": "data.csv"}).text
        assert "<th scope=\"col\">a</th>" in csv_page and "<td>x</td>" in csv_page
        pq_page = c.get(f"{base}/artifacts", params={"path": "table.parquet"}).text
        assert "first 50 of 100 rows" in pq_page and "age (int64)" in pq_page
        assert f'<img class="preview-image" src="{base}/artifact?path=plot.png"' in \
            c.get(f"{base}/artifacts", params={"path": "plot.png"}).text
        mlmodel = c.get(f"{base}/artifacts", params={"path": "model/MLmodel"}).text
        assert "<code>python_function</code>, <code>sklearn</code>" in mlmodel
        assert "No preview" in c.get(f"{base}/artifacts", params={"path": "blob.bin"}).text
        folder = c.get(f"{base}/artifacts", params={"path": "model"}).text
        assert "MLmodel" in folder
        image = c.get(f"{base}/artifact", params={"path": "plot.png"})
        assert image.headers["content-type"] == "image/png"
        assert image.headers["content-disposition"].startswith("inline")
        html = c.get(f"{base}/artifact", params={"path": "page.html"})
        assert html.headers["content-disposition"].startswith("attachment")  # never rendered on this origin
        assert html.headers["content-type"] == "application/octet-stream"
        assert "sandbox" in html.headers["content-security-policy"]
        assert c.get(f"{base}/artifacts", params={"path": "../escape"}).status_code == 400


# ---- sign-in, session, CSRF, roles, tenants ----------------------------------------------------------
def test_pages_ask_for_sign_in_and_come_back_afterwards(secured):
    _, url, tokens = secured
    with client(url) as c:
        r = c.get("/ui/models?x=1")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fmodels%3Fx%3D1"
        login = c.get("/ui/login")
        assert login.status_code == 200 and 'id="token"' in login.text
        assert "local admin" not in login.text  # with auth on nobody is the local admin
        assert c.get("/ui/static/workbench.css").status_code == 200  # the sign-in page needs it
        bad = c.post("/ui/login", data={"token": "mth_" + "x" * 43, "next": "/ui/models"})
        assert bad.status_code == 401 and "not valid" in bad.text
        r = c.post("/ui/login", data={"token": tokens["lee"], "next": "/ui/models?x=1"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/models?x=1"
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("matih_session="))
        attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
        assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict"
        assert attributes["path"] == "Path=/ui" and "secure" not in attributes  # plain http on loopback
        assert c.get("/ui/models").status_code == 200
        assert "lee" in c.get("/ui").text


def test_the_session_cookie_is_not_a_key_to_the_api(secured):
    _, url, tokens = secured
    with signed_in(url, tokens["ada"]) as c:
        assert c.get("/ui").status_code == 200
        api = c.get("/api/v1/experiments", cookies={"matih_session": tokens["ada"]})
        assert api.status_code == 401  # API clients send bearer tokens; a cookie is no credential there


def test_a_revoked_token_ends_its_session(secured):
    from matih_lite.auth import Accounts

    host, url, tokens = secured
    accounts = Accounts(host)
    accounts.create_user("acme", "rita", ["viewer"])
    secret = accounts.create_token("acme", "rita").secret
    with signed_in(url, secret) as c:
        assert c.get("/ui/models").status_code == 200
        token = next(t for t in accounts.list_tokens("acme") if t.user == "rita")
        with client(url, headers={"Authorization": f"Bearer {tokens['ada']}"}) as admin:
            assert admin.delete(f"/api/v1/auth/tokens/{token.token_id}").status_code == 200
        r = c.get("/ui/models")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_sign_out_needs_the_csrf_token_and_clears_the_cookie(secured):
    _, url, tokens = secured
    with signed_in(url, tokens["vic"]) as c:
        token = csrf_of(c.get("/ui/models").text)
        assert c.post("/ui/logout", data={}).status_code == 403
        r = c.post("/ui/logout", data={"csrf_token": token})
        assert r.status_code == 303
        cleared = next(c for c in r.headers.get_list("set-cookie") if c.startswith("matih_session="))
        assert "Max-Age=0" in cleared
        assert c.get("/ui/models").status_code == 303  # signed out: back to the sign-in page


def test_writes_refuse_a_missing_or_foreign_csrf_token_and_other_origins(secured):
    host, url, tokens = secured
    pending = pending_production(host, "churn-csrf")
    with signed_in(url, tokens["lee"]) as c:
        page = c.get("/ui/models").text
        token = csrf_of(page)
        action = f"/ui/approvals/{pending['approval_id']}/approve"
        assert c.post(action, data={"comment": "ok"}).status_code == 403
        assert c.post(action, data={"comment": "ok", "csrf_token": "0" * 40}).status_code == 403
        with signed_in(url, tokens["ada"]) as other:  # another session's token is no good here
            assert c.post(action, data={"csrf_token": csrf_of(other.get("/ui/models").text)}).status_code == 403
        evil = c.post(action, data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "posted from https://evil.example" in evil.text
        assert Registryish(host).stage("churn-csrf", 2) == "Staging"  # nothing of it went through
        ok = c.post(action, data={"csrf_token": token, "comment": "ship it"})
        assert ok.status_code == 303
        assert Registryish(host).stage("churn-csrf", 2) == "Production"


class Registryish:
    def __init__(self, host):
        from matih_lite.registry import Registry

        self.registry = Registry(host)

    def stage(self, model: str, version: int, tenant: str = "acme") -> str:
        return self.registry.get_version(Principal(tenant, "ada", ("admin",)), model, version).stage


def test_a_viewer_sees_no_write_buttons_and_is_refused_with_403(secured):
    host, url, tokens = secured
    pending = pending_production(host, "churn-viewer")
    with signed_in(url, tokens["vic"]) as c:
        models = c.get("/ui/models").text
        model = c.get("/ui/models/churn-viewer").text
        version = c.get("/ui/models/churn-viewer/versions/2").text
        for html in (models, model, version):
            assert 'data-action="approve"' not in html and 'data-action="promote"' not in html
            assert 'data-action="rollback"' not in html and 'data-action="reject"' not in html
        assert "awaiting" in models
        token = csrf_of(models)  # the sign-out form's: a viewer's forms carry a valid token too
        r = c.post(f"/ui/approvals/{pending['approval_id']}/approve", data={"csrf_token": token})
        assert r.status_code == 403 and "viewer" in r.text and "editor role" in r.text
        r = c.post("/ui/models/churn-viewer/versions/1/promote", data={"csrf_token": token, "to": "Archived"})
        assert r.status_code == 403
    assert Registryish(host).stage("churn-viewer", 2) == "Staging"


def test_the_requester_cannot_approve_their_own_request_but_may_withdraw_it(secured):
    host, url, tokens = secured
    pending = pending_production(host, "churn-own")
    with signed_in(url, tokens["ann"]) as c:
        page = c.get("/ui/models/churn-own").text
        row = page.split(f'data-approval="{pending["approval_id"]}"')[1].split("</li>")[0]
        assert 'data-action="approve"' not in row
        assert 'data-action="reject"' in row and "Withdraw" in row


def test_a_lead_approves_and_the_stage_changes(secured):
    host, url, tokens = secured
    pending = pending_production(host, "churn-lead")
    with signed_in(url, tokens["lee"]) as c:
        page = c.get("/ui/models").text
        row = page.split(f'data-approval="{pending["approval_id"]}"')[1].split("</tr>")[0]
        assert 'data-action="approve"' in row
        r = c.post(f"/ui/approvals/{pending['approval_id']}/approve",
                   data={"csrf_token": csrf_of(page), "comment": "ship it", "back": "/ui/models/churn-lead"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/models/churn-lead"
        model = c.get("/ui/models/churn-lead").text
    assert re.search(r'<tr data-version="2">.*?data-stage="Production"', model, re.DOTALL)
    assert re.search(r'<tr data-version="1">.*?data-stage="Archived"', model, re.DOTALL)
    assert "approved: version 2 of churn-lead is in Production" in model  # the flash
    assert "approval.approved" in model and "ship it" in model  # the audit log


def test_a_lead_rolls_production_back_and_nothing_to_roll_back_is_said_in_words(secured):
    host, url, tokens = secured
    pending = pending_production(host, "churn-back")
    with signed_in(url, tokens["lee"]) as c:
        page = c.get("/ui/models/churn-back").text
        r = c.post(f"/ui/approvals/{pending['approval_id']}/approve", data={"csrf_token": csrf_of(page)})
        assert r.status_code == 303
        page = c.get("/ui/models/churn-back").text
        assert 'data-action="rollback"' in page
        r = c.post("/ui/models/churn-back/rollback", data={"csrf_token": csrf_of(page), "reason": "auc fell"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/models/churn-back"
        model = c.get("/ui/models/churn-back").text
        assert re.search(r'<tr data-version="1">.*?data-stage="Production"', model, re.DOTALL)
        assert re.search(r'<tr data-version="2">.*?data-stage="Archived"', model, re.DOTALL)
        assert "model.rolled_back" in model and "auc fell" in model  # the audit log
        pending_production(host, "churn-first")  # only version 1 has been in Production
        first = c.get("/ui/models/churn-first").text
        refused = c.post("/ui/models/churn-first/rollback", data={"csrf_token": csrf_of(first)})
    assert refused.status_code == 409 and 'id="refusal"' in refused.text
    assert "nothing to roll back to" in html_text(refused.text)
    assert Registryish(host).stage("churn-first", 1) == "Production"


def test_a_governance_refusal_is_shown_in_words(hermetic, monkeypatch):
    import textwrap

    from matih_lite.contracts import Metric
    from matih_lite.host import Host
    from matih_lite.registry import Registry
    from matih_lite.testing.service import serve

    (hermetic / "matih.toml").write_text(textwrap.dedent("""
        [models.churn]
        staging_requires = ["auc >= 0.95", "latency_ms <= 20"]
    """))
    host = Host.open(str(hermetic / "matih.toml"))
    tracking = Tracking(host)
    exp = tracking.get_or_create_experiment("default", "churn")
    run = tracking.create_run("default", exp.experiment_id)
    tracking.log_batch("default", run.run_id, metrics=[Metric("auc", 0.91, 1, 0)])
    tracking.log_artifact("default", run.run_id, "model/MLmodel", b"flavors:\n  sklearn: {}\n")
    Registry(host).register_version(LOCAL_ADMIN, "churn", None, run_id=run.run_id, path="model", flavor="sklearn")
    try:
        with serve(host) as url, client(url) as c:
            token = csrf_of(c.get("/ui/models/churn").text)
            r = c.post("/ui/models/churn/versions/1/promote", data={"csrf_token": token, "to": "Staging"})
            assert r.status_code == 422
            assert 'id="refusal"' in r.text
            assert "<code>auc &gt;= 0.95</code> is not met: the version's value is 0.91" in r.text
            assert "<code>latency_ms &lt;= 20</code> is not met: the version's value is not logged" in r.text
            assert c.get("/ui/models/churn").text.count("transition.refused") == 1  # audited
    finally:
        host.close()


def test_pages_show_only_the_callers_tenant(secured, monkeypatch):
    host, url, tokens = secured
    runs = log_runs(monkeypatch, url, tokens["ann"])
    pending_production(host, "churn-tenant")
    with signed_in(url, tokens["oscar"]) as other:
        assert 'class="exp-link"' not in other.get("/ui").text  # acme's experiments are not listed
        assert other.get(f"/ui/runs/{runs['a']}").status_code == 404
        assert other.get(f"/ui/experiments/{runs['experiment']}").status_code == 404
        assert other.get(f"/ui/compare?runs={runs['a']},{runs['b']}").status_code == 404
        assert other.get(f"/ui/api/series?runs={runs['a']}&key=loss").status_code == 404
        assert other.get("/ui/models/churn-tenant").status_code == 404
        assert 'href="/ui/models/churn-tenant"' not in other.get("/ui/models").text
    with signed_in(url, tokens["vic"]) as same:
        assert same.get(f"/ui/runs/{runs['a']}").status_code == 200


# ---- features -------------------------------------------------------------------------------------------
def test_features_page_shows_views_freshness_and_quality(platform, served):
    from matih_lite.testing.features import CUSTOMER, DAY, T0
    from matih_lite.testing.features import Platform as FeaturePlatform

    with client(served) as c:
        assert "No feature definitions are applied" in c.get("/ui/features").text
    repo = Path(platform.config.path).parent / "features"
    repo.mkdir()
    (repo / "customer.toml").write_text(CUSTOMER)
    features = FeaturePlatform(platform, repo)
    features.customers([(1, T0 - DAY, T0 - DAY, 0.2, 2), (2, T0 - DAY, T0 - DAY, None, 3)])
    features.apply()
    with client(served) as c:
        page = c.get("/ui/features")
        assert page.status_code == 200
        assert '<tr data-view="customer_stats" class="stale">' in page.text  # newest row older than its 7d TTL
        row = page.text.split('data-view="customer_stats"')[1].split("</tr>")[0]
        assert '<strong class="yes">stale</strong>' in row
        assert "<code>conv_rate</code>" in row and "7d" in row
        detail = c.get("/ui/features/customer_stats")
        assert detail.status_code == 200
        quality = detail.text.split('id="feature-quality"')[1].split("</table>")[0]
        conv = quality.split('data-feature="conv_rate"')[1].split("</tr>")[0]
        assert "50.0%" in conv  # one of the two rows has no conv_rate
        assert "customer.toml" in detail.text and "churn_v1" in detail.text  # declared where, used by whom
        assert c.get("/ui/features/nope").status_code == 404


# ---- deployments ----------------------------------------------------------------------------------------
def test_deployment_page_shows_routes_variant_stats_shadow_agreement_and_recent_requests(platform, served):
    servable_versions(platform)
    with client(served) as c:
        r = c.post("/api/v1/deployments", json={"name": "doubler", "model": "doubler", "split": "1=70,2=30",
                                                "shadows": []})
        assert r.status_code == 201, r.text
        for i in range(40):
            p = c.post("/api/v1/deployments/doubler/predict", json={"inputs": [[float(i), 1.0]]},
                       headers={"X-Request-Key": f"user-{i}"})
            assert p.status_code == 200, p.text
        page = c.get("/ui/deployments/doubler").text
        routes = page.split('id="routes"')[1].split("</table>")[0]
        assert ">v1</a>" in routes and "70.0%" in routes and "30.0%" in routes
        stats = page.split('id="variant-stats"')[1].split("</table>")[0]
        rows = re.findall(r"<tr><td>(v\d)</td><td>\d</td><td class=\"num\">([\d.]+)</td><td class=\"num\">(\d+)</td>",
                          stats)
        assert {v for v, _, _ in rows} == {"v1", "v2"} and sum(int(n) for _, _, n in rows) == 40
        assert all(float(rps) > 0 for _, rps, _ in rows)  # req/s over the last minute
        recent = page.split('id="recent-requests"')[1].split("</table>")[0]
        assert recent.count("<tr><td") == 25  # the newest 25 of the 40
        assert ">78</td>" in recent  # the last request's prediction: 2 x 39
        # a shadow of v2 beside v1: its agreement with the primary
        r = c.patch("/api/v1/deployments/doubler", json={"version": 1, "shadows": [2]})
        assert r.status_code == 200, r.text
        for i in range(10):
            assert c.post("/api/v1/deployments/doubler/predict", json={"inputs": [[float(i), 1.0]]}).status_code == 200
        live = c.get("/ui/deployments/doubler", params={"part": "live"})
        assert live.status_code == 200 and "<html" not in live.text  # the fragment the page refreshes
        shadow = live.text.split('id="shadow-stats"')[1].split("</table>")[0]
        assert "100.0%" in shadow  # the same model: every row agrees
        history = c.get("/ui/deployments/doubler").text.split('id="h-history"')[1]
        assert "created" in history and "updated" in history
