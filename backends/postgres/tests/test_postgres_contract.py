"""matih-postgres against a real PostgreSQL: the metadata contract kit, discovery, concurrency.

The server comes from ``MATIH_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
then the same as ``root``). Each test gets its own schema ``matih_test_<uuid8>``, dropped
afterwards. Without a server the tests skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

from matih_lite.config import mask_secrets
from matih_lite.contracts import BackendContext, Metric
from matih_lite.errors import Conflict, StoreError
from matih_lite.sqlstore.schema import MIGRATIONS
from matih_lite.testing import MetadataStoreContract

pytestmark = pytest.mark.postgres


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


try:
    import psycopg  # noqa: F401

    from matih_postgres.plugin import DIALECT, PostgresSettings, _is_retryable, create_store
except ImportError as exc:  # pragma: no cover - depends on the environment
    _why = f"matih-postgres is not installed ({exc}); pip install -e backends/postgres"
    if _in_ci():
        raise ImportError(_why) from exc
    pytest.skip(_why, allow_module_level=True)

DEFAULT_DSNS = ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test")
T = "tenant-a"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A DSN that connects, or skip (fail under CI=true) saying why."""
    import psycopg

    explicit = os.environ.get("MATIH_TEST_PG_DSN")
    errors = []
    for dsn in ((explicit,) if explicit else DEFAULT_DSNS):
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            return dsn
        except psycopg.Error as exc:
            errors.append(f"{mask_secrets(dsn)}: {str(exc).strip()}")
    msg = ("PostgreSQL is not reachable for the matih-postgres tests; start it or point MATIH_TEST_PG_DSN "
           "at a database where this user may create schemas. Tried:\n  " + "\n  ".join(errors))
    if _in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def admin(pg_dsn):
    import psycopg

    conn = psycopg.connect(pg_dsn, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def schema(admin):
    """A fresh schema name (not yet created: the backend creates it), dropped afterwards."""
    from psycopg import sql

    name = f"matih_test_{uuid.uuid4().hex[:8]}"
    yield name
    admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _context(tmp_path) -> BackendContext:
    return BackendContext(home=tmp_path / ".matih", base_dir=tmp_path, profile="cluster")


@pytest.fixture
def make_store(pg_dsn, schema, tmp_path):
    """Build stores on this test's schema; all are closed at the end."""
    made = []

    def make(**kw):
        store = create_store(PostgresSettings(dsn=pg_dsn, schema=schema, **kw), _context(tmp_path))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


class TestPostgresMetadata(MetadataStoreContract):
    @pytest.fixture
    def store(self, make_store):
        return make_store()


# ---- discovery ---------------------------------------------------------------------------------
def test_backend_is_discovered_through_the_entry_point(pg_dsn, schema, tmp_path, admin):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text(textwrap.dedent(f"""
        default_profile = "cluster"

        [profiles.cluster]
        metadata = {{ backend = "postgres", dsn = "${{TEST_PG_DSN}}", schema = "{schema}" }}
    """))
    config = load_config(tmp_path / "matih.toml", env={"TEST_PG_DSN": pg_dsn}, cwd=tmp_path)
    host = Host(config)
    try:
        spec = host.active("metadata")
        assert spec is not None and spec.name == "postgres"
        assert spec.distribution and spec.distribution.startswith("matih-postgres ")  # the entry point
        assert spec.plugin == "postgres"
        health = host.metadata.health()
        assert health.ok and "postgres" in health.detail
        exp = host.metadata.create_experiment(T, "via-host")
        assert host.metadata.get_experiment_by_name(T, "via-host") == exp
    finally:
        host.close()
    tables = admin.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                           (schema,)).fetchall()
    assert {"_migrations", "experiments", "runs", "metrics"} <= {t[0] for t in tables}


def test_unknown_settings_are_reported_by_the_host(tmp_path):
    from matih_lite.config import load_config
    from matih_lite.host import Host

    (tmp_path / "matih.toml").write_text(
        '[profiles.cluster]\nmetadata = { backend = "postgres", dsn = "postgresql://x@h/db", shema = "s" }\n')
    host = Host(load_config(tmp_path / "matih.toml", env={}, cwd=tmp_path), "cluster", strict=False)
    assert any("shema" in msg and key.startswith("profiles.cluster.metadata") for key, msg in host.config_problems)


def test_settings_validation_does_not_import_psycopg():
    code = textwrap.dedent("""
        import sys, msgspec
        from matih_postgres.plugin import PostgresSettings
        s = msgspec.convert({"dsn": "postgresql://u@h/db", "schema": "ml"}, PostgresSettings)
        assert s.connect_timeout == 10 and s.schema == "ml"
        for bad in ({"dsn": "x", "schema": ""}, {"dsn": "x", "nope": 1}, {"schema": "s"}):
            try:
                msgspec.convert(bad, PostgresSettings)
            except msgspec.ValidationError:
                pass
            else:
                raise SystemExit(f"accepted {bad}")
        assert "psycopg" not in sys.modules, "psycopg imported while validating settings"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- schema and migrations ---------------------------------------------------------------------
def test_tables_live_in_the_configured_schema_and_migrate_once(make_store, schema):
    store = make_store()
    with store.db.read() as cur:
        cur.execute("SELECT current_schema(), version, name FROM _migrations ORDER BY version")
        assert cur.fetchall()[0] == (schema, 1, "tracking")
    again = make_store()
    assert again.db.migrate(MIGRATIONS) == []
    assert "schema " + schema in again.location
    assert "@" not in again.location


def test_existing_schema_with_odd_name_is_used(pg_dsn, admin, tmp_path):
    from psycopg import sql

    name = f"Matih Test-{uuid.uuid4().hex[:6]}"  # needs quoting
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        store = create_store(PostgresSettings(dsn=pg_dsn, schema=name), _context(tmp_path))
        store.create_experiment(T, "e")
        assert store.search_experiments(T).items[0].name == "e"
        store.close()
        n = admin.execute(sql.SQL("SELECT count(*) FROM {}.experiments").format(sql.Identifier(name))).fetchone()
        assert n == (1,)
    finally:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_concurrent_startup_on_a_fresh_schema(pg_dsn, schema, tmp_path):
    """Several services starting at once: one migrates, the others wait and find it done."""
    n = 6
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def start(i: int) -> None:
        barrier.wait()
        try:
            results[i] = create_store(PostgresSettings(dsn=pg_dsn, schema=schema), _context(tmp_path))
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results if isinstance(r, Exception)]
    for r in results:
        if not isinstance(r, Exception):
            r.close()
    assert not failures, failures
    check = create_store(PostgresSettings(dsn=pg_dsn, schema=schema), _context(tmp_path))
    with check.db.read() as cur:
        cur.execute("SELECT count(*) FROM _migrations")
        assert cur.fetchone()[0] == len(MIGRATIONS)
    check.close()


# ---- connections -------------------------------------------------------------------------------
def test_unreachable_server_is_a_store_error_without_the_password(tmp_path):
    with pytest.raises(StoreError) as info:
        create_store(PostgresSettings(dsn="postgresql://matih:s3cretpw@127.0.0.1:1/nowhere", connect_timeout=2),
                     _context(tmp_path))
    assert "postgres" in str(info.value) and "s3cretpw" not in str(info.value)


def test_reconnects_after_the_server_drops_the_connection(make_store, admin):
    store = make_store()
    exp = store.create_experiment(T, "survives")
    pid = store.db.connection().info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    failures = 0
    for _ in range(3):  # the call that finds the socket dead may fail; the next one reconnects
        try:
            assert store.get_experiment(T, exp.experiment_id) == exp
            break
        except StoreError:
            failures += 1
    assert failures <= 1
    assert store.db.connection().info.backend_pid != pid


def test_search_path_and_timeouts_are_applied(make_store, schema):
    store = make_store(statement_timeout_ms=1234, application_name="matih-test")
    with store.db.read() as cur:
        cur.execute("SELECT current_setting('search_path'), current_setting('statement_timeout'), "
                    "current_setting('application_name')")
        path, timeout, app = cur.fetchone()
    assert schema in path and timeout == "1234ms" and app == "matih-test"


# ---- concurrency -------------------------------------------------------------------------------
def test_deadlocks_and_serialization_failures_are_retried():
    class E(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert DIALECT.name == "postgres"
    assert DIALECT.is_locked(E("40P01")) and DIALECT.is_locked(E("40001"))
    assert not DIALECT.is_locked(E("23505")) and not _is_retryable(ValueError("x"))


def _hammer(n: int, work) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_tag_upserts_in_opposite_orders(make_store):
    """Upserts that lock rows in different orders deadlock in PostgreSQL; the write is retried."""
    store = make_store()
    exp = store.create_experiment(T, "tags")
    run = store.create_run(T, exp.experiment_id, run_id=uuid.uuid4().hex, name="r", start_time=1)
    keys = [f"k{i}" for i in range(8)]

    def work(i: int) -> None:
        order = keys if i % 2 else list(reversed(keys))
        for j in range(3):
            store.log_batch(T, run.run_id, tags={k: f"{i}-{j}" for k in order},
                            metrics=[Metric(k, float(j), j, j) for k in order])

    assert _hammer(4, work) == []
    got = store.get_run(T, run.run_id)
    assert set(got.tags) == set(keys) and all(m.step == 2 for m in got.metrics.values())


def test_racing_creates_of_one_experiment_give_one_winner_and_conflicts(make_store):
    store = make_store()
    for round_ in range(5):
        won: list[str] = []

        def work(i: int, name: str = f"race-{round_}") -> None:
            won.append(store.create_experiment(T, name).experiment_id)

        errors = _hammer(8, work)
        assert len(won) == 1
        assert errors and all(isinstance(e, Conflict) for e in errors), errors


def test_racing_writes_of_one_param(make_store):
    store = make_store()
    exp = store.create_experiment(T, "params")
    run = store.create_run(T, exp.experiment_id, run_id=uuid.uuid4().hex, name="r", start_time=1)
    errors = _hammer(8, lambda i: store.log_batch(T, run.run_id, params={"lr": "0.1", f"p{i}": "x"}))
    assert errors == []
    errors = _hammer(8, lambda i: store.log_batch(T, run.run_id, params={"new": str(i)}))
    assert len(errors) == 7 and all(isinstance(e, Conflict) for e in errors), errors


def test_a_real_duplicate_still_fails_promptly(make_store):
    import time

    store = make_store()
    exp = store.create_experiment(T, "dup")
    store.create_run(T, exp.experiment_id, run_id="same", name="a", start_time=1)
    started = time.monotonic()
    with pytest.raises(StoreError, match="duplicate key"):
        store.create_run(T, exp.experiment_id, run_id="same", name="b", start_time=2)
    assert time.monotonic() - started < 5
    assert store.get_run(T, "same").name == "a"


def test_two_hosts_on_one_database_changing_one_logged_model_lose_nothing(pg_dsn, schema, tmp_path):
    """Two service replicas (two hosts, their own connections) on one schema: every change to one model stays."""
    from matih_lite.config import load_config
    from matih_lite.host import Host
    from matih_lite.testing.logged_models import replicas_lose_nothing

    (tmp_path / "matih.toml").write_text(textwrap.dedent(f"""
        default_profile = "cluster"

        [profiles.cluster]
        metadata = {{ backend = "postgres", dsn = "${{TEST_PG_DSN}}", schema = "{schema}" }}
    """))
    hosts = [Host(load_config(tmp_path / "matih.toml", env={"TEST_PG_DSN": pg_dsn, "MATIH_HOME": str(tmp_path / "h")},
                              cwd=tmp_path)) for _ in range(2)]
    try:
        assert all(h.active("metadata").name == "postgres" for h in hosts)
        replicas_lose_nothing(hosts)
    finally:
        for h in hosts:
            h.close()


# ---- same answers as SQLite ----------------------------------------------------------------------
# The queries are shared with the SQLite backend, so a search must answer the same on both
# (LIKE without an escape character, text in code-point order).
_NAMES = ["alpha", "Beta", "beta", "_under", "pct%x", "a_b", "aXb", "Zed", "émile", "Émile", "r1", "r10", "r2",
          "back\\slash", ""]


@pytest.fixture(scope="module")
def twins(pg_dsn, tmp_path_factory):
    """The same runs in a SQLite store and a PostgreSQL store: {name: (store, experiment_id)}."""
    import math

    import psycopg
    from psycopg import sql

    from matih_lite.builtin.sqlite_store import SqliteSettings
    from matih_lite.builtin.sqlite_store import create_store as create_sqlite

    tmp = tmp_path_factory.mktemp("twins")
    schema = f"matih_test_{uuid.uuid4().hex[:8]}"
    stores = {"sqlite": create_sqlite(SqliteSettings(path=str(tmp / "twin.db")), _context(tmp)),
              "postgres": create_store(PostgresSettings(dsn=pg_dsn, schema=schema), _context(tmp))}
    out = {}
    for name, store in stores.items():
        exp = store.create_experiment(T, "twins")
        for i, run_name in enumerate(_NAMES):
            run = store.create_run(T, exp.experiment_id, run_id=f"run{i:02d}", name=run_name, start_time=1000 + i,
                                   user_id="U" if i % 2 else "u")
            value = [0.5, math.nan, math.inf, -math.inf, 1e308, -0.0, 3.0][i % 7]
            store.log_batch(T, run.run_id, metrics=[] if i % 4 == 0 else [Metric("auc", value, 1, 0)],
                            params={"p": run_name, "num": str(i)}, tags={"t": run_name.upper()} if i % 3 else {})
            if i % 5 == 0:
                store.update_run(T, run.run_id, status="FINISHED", end_time=2000 + i)
        out[name] = (store, exp.experiment_id)
    yield out
    for store in stores.values():
        store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _answers(twins, filter_text, order_by):
    from matih_lite.contracts.search import parse_filter, parse_order_by

    return {name: [r.run_id for r in store.search_runs(T, [eid], filter=parse_filter(filter_text),
                                                       order_by=parse_order_by(order_by)).items]
            for name, (store, eid) in twins.items()}


@pytest.mark.parametrize("filter_text", [
    "", "attributes.run_name LIKE 'a%'", "attributes.run_name ILIKE 'B%'", "attributes.run_name LIKE 'a_b'",
    "metrics.auc > 0.6", "metrics.auc != 0.5", "metrics.auc = 0", "attributes.start_time > 1005",
    "tags.t IS NOT NULL", "attributes.end_time < 2010", "tags.t IS NULL", "tags.t != 'BETA'",
    "params.num IN ('1','2','x')", "params.num NOT IN ('1','2')", "attributes.user_id = 'U'",
    "attributes.status != 'FINISHED'", "params.p != ''", "params.p = ''",
    "attributes.run_name LIKE 'pct\\%x'",
    "params.p LIKE 'back\\slash'",
    "attributes.run_name ILIKE 'é%'",
])
def test_filters_answer_as_on_sqlite(twins, filter_text):
    for order_by in (None, "attributes.run_name", "params.p DESC", "metrics.auc", "metrics.auc DESC",
                     "tags.t", "attributes.end_time", "attributes.user_id, attributes.run_name DESC"):
        answers = _answers(twins, filter_text, order_by)
        assert answers["postgres"] == answers["sqlite"], order_by


def test_experiment_name_like_has_no_escape_character(make_store):
    store = make_store()
    store.create_experiment(T, "a\\b")
    store.create_experiment(T, "a%b")
    assert [e.name for e in store.search_experiments(T, name_like="a\\%").items] == ["a\\b"]


def test_text_sorts_by_code_point_whatever_the_database_collation(make_store, schema, admin):
    make_store()
    collations = admin.execute("SELECT DISTINCT collation_name FROM information_schema.columns "
                               "WHERE table_schema = %s AND data_type = 'text'", (schema,)).fetchall()
    assert collations == [("C",)]
