"""Tenant scoping is written once (sqlstore/scope.py), and a new table or query cannot forget it.

Every table the migrations create is declared (owned by a tenant, a child of an owned table, or
shared, with the reason); no sqlstore module writes ``tenant = ?`` itself or names an owned table
in SQL text of its own; and the scope's statements cannot be widened by the caller's conditions.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matih_lite.builtin.sqlite_store import SqliteSettings, create_store
from matih_lite.contracts import BackendContext
from matih_lite.errors import InvalidInput
from matih_lite.sqlstore import scope
from matih_lite.sqlstore.schema import MIGRATIONS, TABLES
from matih_lite.sqlstore.scope import EVERY_TENANT, Child, Join, Owned, Paging, Scoped, Shared

SQLSTORE = Path(scope.__file__).parent


@pytest.fixture
def store(tmp_path):
    s = create_store(SqliteSettings(), BackendContext(home=tmp_path, base_dir=tmp_path, profile="lite"))
    yield s
    s.close()


def _schema(store) -> dict[str, sqlite3.Row]:
    with store.db.read() as cur:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return {r[0]: r for r in cur.fetchall()}


def _columns(store, table: str) -> set[str]:
    with store.db.read() as cur:
        cur.execute(f"PRAGMA table_info({table})")
        return {r[1] for r in cur.fetchall()}


def _references(store, table: str) -> set[str]:
    with store.db.read() as cur:
        cur.execute(f"PRAGMA foreign_key_list({table})")
        return {r[2] for r in cur.fetchall()}


def test_every_table_is_declared_with_how_it_belongs_to_a_tenant(store):
    made = set(_schema(store))
    assert made - set(TABLES) == set(), "declare these tables in their module's TABLES (sqlstore/scope.py says how)"
    assert set(TABLES) - made == set(), "declared tables that no migration creates"


def test_owned_tables_have_a_tenant_column_and_children_reach_their_parent(store):
    for table, how in TABLES.items():
        if isinstance(how, Owned):
            assert "tenant" in _columns(store, table), table
        elif isinstance(how, Child):
            assert isinstance(TABLES[how.parent], Owned), (table, how)
            seen, frontier = set(), {table}
            while frontier and how.parent not in seen:  # foreign keys, followed through other children
                seen |= frontier
                frontier = {ref for t in frontier for ref in _references(store, t)} - seen
            assert how.parent in seen, f"{table} has no foreign key path to {how.parent}"
        else:
            assert isinstance(how, Shared) and how.reason, table


# ---- the source check ------------------------------------------------------------------------------
def _owned_pattern() -> re.Pattern[str]:
    owned = sorted((t for t, how in TABLES.items() if isinstance(how, Owned)), key=len, reverse=True)
    return re.compile(rf"\b(?:FROM|JOIN|UPDATE|INTO)\s+({'|'.join(owned)})\b")


_HAND_SCOPED = re.compile(r"\btenant\s*=\s*(?:\?|%s)")


def scope_violations(source: str, filename: str = "<source>") -> list[str]:
    """SQL text in ``source`` that scopes by hand or names an owned table outside sqlstore/scope.py."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.JoinedStr):  # its parts are read together, below
            skip |= {id(v) for v in node.values}
    owned = _owned_pattern()
    found = []
    for node in ast.walk(tree):
        texts: list[str] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            texts = [node.value]
        elif isinstance(node, ast.JoinedStr):
            texts = ["".join(v.value if isinstance(v, ast.Constant) else " {} " for v in node.values)]
        for text in texts:
            if _HAND_SCOPED.search(text):
                found.append(f"{filename}:{node.lineno}: writes the tenant predicate by hand: {text[:60]!r}")
            m = owned.search(text)
            if m:
                found.append(f"{filename}:{node.lineno}: names owned table {m.group(1)!r} in its own SQL: "
                             f"{text[:60]!r}")
    return found


def test_no_sqlstore_module_scopes_by_hand_or_queries_an_owned_table_itself():
    found = []
    for path in sorted(SQLSTORE.glob("*.py")):
        if path.name != "scope.py":
            found += scope_violations(path.read_text(), path.name)
    assert not found, "go through matih_lite.sqlstore.scope.Scoped:\n  " + "\n  ".join(found)


def test_the_source_check_catches_what_it_is_for():
    source = '''
def leaky(cur, tenant, run_id):
    """Runs FROM runs, in a docstring: prose, not SQL."""
    cur.execute("SELECT * FROM runs WHERE tenant = ? AND run_id = ?", (tenant, run_id))
    cur.execute(f"UPDATE experiments SET name = ? WHERE experiment_id = {1}")
    cur.execute("DELETE FROM params WHERE run_id = ?", (run_id,))  # a child table: by its parent's key
'''
    found = scope_violations(source)
    assert len(found) == 3, found
    assert any("by hand" in f for f in found) and any("'runs'" in f for f in found) and any(
        "'experiments'" in f for f in found)


# ---- what a scope does -----------------------------------------------------------------------------
def test_a_callers_or_cannot_widen_the_scope(store):
    for tenant in ("t1", "t2"):
        store.create_experiment(tenant, "x")
        store.create_experiment(tenant, f"only-{tenant}")
    with store.db.read() as cur:
        mine = Scoped(cur, store.db.dialect, "t1")
        names = {r[0] for r in mine.select("experiments", "name", "name = ? OR 1 = 1", ("x",))}
        assert names == {"x", "only-t1"}
        every = {r[0] for r in Scoped(cur, store.db.dialect, EVERY_TENANT).select("experiments", "name")}
        assert every == {"x", "only-t1", "only-t2"}


def test_a_joined_owned_table_is_scoped_too_and_a_left_join_stays_left(store):
    e1 = store.create_experiment("t1", "e").experiment_id
    store.create_run("t1", e1, run_id="r1", name="r", start_time=1)
    with store.db.read() as cur:
        rows = Scoped(cur, store.db.dialect, "t1").select(
            "experiments", "x.name, r.run_id", alias="x",
            joins=[Join("runs", "r", "r.experiment_id = x.experiment_id", kind="LEFT JOIN")])
        assert rows == [("e", "r1")]
        assert Scoped(cur, store.db.dialect, "t2").select("experiments", "x.name", alias="x") == []
    # A row of another tenant on the joined side is left out of the join, not out of the answer.
    store.db.write(lambda cur: cur.execute("UPDATE runs SET tenant = 't2' WHERE run_id = 'r1'"))
    with store.db.read() as cur:
        rows = Scoped(cur, store.db.dialect, "t1").select(
            "experiments", "x.name, r.run_id", alias="x",
            joins=[Join("runs", "r", "r.experiment_id = x.experiment_id", kind="LEFT JOIN")])
        assert rows == [("e", None)]


def test_undeclared_child_and_shared_tables_are_refused(store):
    with store.db.read() as cur:
        mine = Scoped(cur, store.db.dialect, "t1")
        with pytest.raises(ValueError, match="not declared"):
            mine.select("nonsense", "1")
        with pytest.raises(ValueError, match="parent"):
            mine.select("params", "1")
        with pytest.raises(ValueError, match="parent"):
            mine.select("tenants", "1")
        with pytest.raises(TypeError):
            Scoped(cur, store.db.dialect, None)  # type: ignore[arg-type]

    def insert_with_tenant(cur):
        Scoped(cur, store.db.dialect, "t1").insert("experiments", {"tenant": "t2", "name": "x"})

    with pytest.raises(ValueError, match="adds the tenant"):
        store.db.write(insert_with_tenant)

    def insert_everywhere(cur):
        Scoped(cur, store.db.dialect, EVERY_TENANT).insert("experiments", {"name": "x"})

    with pytest.raises(ValueError, match="one tenant"):
        store.db.write(insert_everywhere)


def test_migrations_of_logged_models_are_in_their_range():
    from matih_lite.sqlstore import logged_models

    assert [m[0] for m in logged_models.MIGRATIONS] == [300, 301]
    assert len({m[0] for m in MIGRATIONS}) == len(MIGRATIONS)


# ---- paging ------------------------------------------------------------------------------------------
@given(total=st.integers(0, 40), size=st.integers(1, 12))
def test_pages_cover_every_row_once_in_order(total, size):
    rows = list(range(total))
    seen, token = [], None
    while True:
        paging: Paging[int] = Paging(token, size)
        fetched = rows[paging.offset:paging.offset + paging.params()[0]]  # what LIMIT ? OFFSET ? returns
        page = paging.page(fetched)
        seen += page.items
        token = page.next_token
        if token is None:
            break
    assert seen == rows


def test_bad_page_requests_say_what_to_do():
    for bad in (0, -1, True, "10"):
        with pytest.raises(InvalidInput, match="max_results"):
            Paging(None, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="next_token"):
        Paging("not a token", 10)
    everything: Paging[int] = Paging(None, None)
    assert everything.kind == "" and everything.page([1, 2, 3]).next_token is None
