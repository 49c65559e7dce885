"""Runs ordered by one metric, param or tag take the index-order path; it pages exactly as the general query.

The general query (any order) sorts every matching run; ordering by one key walks that key's index
phase by phase (values, NaNs, runs without the key). Adding "start time, newest first" as a second
key, which the order already ends with, keeps the general path: the two must agree page by page.
"""

from __future__ import annotations

import math
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matih_lite.contracts import Metric
from matih_lite.contracts.search import OrderBy
from matih_lite.testing.processes import engine_missing
from matih_lite.tracking import Tracking

T = "default"
TIEBREAK = OrderBy("attribute", "start_time", ascending=False)


PG_DSN = os.environ.get("MATIH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _metadata(engine: str, folder) -> tuple[str, str | None]:
    """The ``metadata = {...}`` of a profile on ``engine``, and the PostgreSQL schema to drop afterwards."""
    if engine == "sqlite":
        return f'{{ backend = "sqlite", path = "{folder}/matih.db" }}', None
    try:
        import matih_postgres  # noqa: F401
        import psycopg
    except ImportError as exc:
        engine_missing(f"PostgreSQL for the ordered-search tests: {exc} (pip install -e backends/postgres)")
    try:
        psycopg.connect(PG_DSN, connect_timeout=5).close()
    except psycopg.Error as exc:
        engine_missing(f"PostgreSQL for the ordered-search tests at {PG_DSN}: {exc}")
    schema = f"matih_ordered_{uuid.uuid4().hex[:8]}"
    return f'{{ backend = "postgres", dsn = "{PG_DSN}", schema = "{schema}" }}', schema


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def population(request, tmp_path_factory):
    """60 runs: metric auc missing on some, NaN on some, ties on others; params and tags likewise."""
    import random

    from matih_lite.host import Host

    folder = tmp_path_factory.mktemp("ordered")
    metadata, schema = _metadata(request.param, folder)
    (folder / "matih.toml").write_text(f'default_profile = "t"\n[profiles.t]\nmetadata = {metadata}\n'
                                       f'artifacts = {{ backend = "local", root = "{folder}/artifacts" }}\n')
    host = Host.open(str(folder / "matih.toml"))
    tracking = Tracking(host)
    exp = tracking.create_experiment(T, "ordered").experiment_id
    rng = random.Random(7)
    for i in range(60):
        run = tracking.create_run(T, exp, start_time=1_000 + (i // 3))  # ties on start time too
        metrics, params, tags = [], {}, {}
        roll = rng.random()
        if roll < 0.6:
            metrics.append(Metric("auc", round(rng.random(), 1), 1, 0))  # many equal values
        elif roll < 0.75:
            metrics.append(Metric("auc", math.nan, 1, 0))
        if rng.random() < 0.7:
            params["depth"] = str(rng.randint(1, 5))
        if rng.random() < 0.5:
            tags["team"] = rng.choice(["a", "b"])
        params["model"] = rng.choice(["x", "y"])
        tracking.log_batch(T, run.run_id, metrics=metrics, params=params, tags=tags)
    yield tracking, exp
    host.close()
    if schema:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pages(tracking, exp, order, size, filter):
    out, token = [], None
    while True:
        page = tracking.search_runs(T, [exp], order_by=order, max_results=size, page_token=token, filter=filter,
                                    columns=[])
        out.append([r.run_id for r in page.items])
        token = page.next_token
        if token is None:
            return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind_key=st.sampled_from([("metric", "auc"), ("param", "depth"), ("tag", "team"), ("metric", "never")]),
       ascending=st.booleans(), size=st.integers(1, 25),
       filter=st.sampled_from([None, "params.model = 'x'", "metrics.auc > 0.3", "tags.team = 'b'",
                               "params.depth IS NULL", "metrics.auc > 0.85"]),
       prefix=st.sampled_from([1, 4000]))
def test_one_key_order_pages_like_the_general_query(population, monkeypatch, kind_key, ascending, size, filter,
                                                    prefix):
    """``prefix`` 1 makes the bounded index walk stop after 8 pages' worth of entries: both of its outcomes
    (a full page, or falling back to the phases) meet the general query."""
    import matih_lite.sqlstore.tracking as sql

    monkeypatch.setattr(sql, "_PREFIX_ROWS", prefix)
    tracking, exp = population
    kind, key = kind_key
    fast = pages(tracking, exp, [OrderBy(kind, key, ascending)], size, filter)
    general = pages(tracking, exp, [OrderBy(kind, key, ascending), TIEBREAK], size, filter)
    assert fast == general


def test_values_first_then_nan_then_missing(population):
    tracking, exp = population
    runs = tracking.search_runs(T, [exp], order_by=["metrics.auc DESC"], max_results=100).items
    kinds = ["missing" if "auc" not in r.metrics else "nan" if math.isnan(r.metrics["auc"].value) else "value"
             for r in runs]
    assert kinds == sorted(kinds, key=["value", "nan", "missing"].index)
    values = [r.metrics["auc"].value for r, k in zip(runs, kinds) if k == "value"]
    assert values == sorted(values, reverse=True)
    assert len(runs) == 60
