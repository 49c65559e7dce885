"""Tenant scoping and paging for the metadata SQL, written once for every table.

Every table a migration creates is declared in the ``TABLES`` of the module that creates it
(collected in :data:`matih_lite.sqlstore.schema.TABLES`):

- :data:`OWNED`: the row carries a ``tenant`` column. Every statement over such a table is
  built by :class:`Scoped`, which adds ``tenant = ?`` for the tenant it was made for, for the
  table read, written or joined (a LEFT JOIN gets it in its ``ON``, so it stays a left join);
- :class:`Child`: the row belongs to a parent row (a run's params, a model's tags) and is only
  reached by the parent's key, which a scoped statement returned first;
- :class:`Shared`: not one tenant's data (the tenants themselves, the migrations).

A statement over every tenant at once (the token lookup, the deployments feed) says so by
scoping to :data:`EVERY_TENANT`. ``tests/tracking/test_tenant_scope.py`` fails when a table is
not declared, when an owned table has no ``tenant`` column, and when a module writes
``tenant = ?`` or names an owned table in SQL text of its own instead of going through here.

:class:`Paging` is the one place a page token becomes ``LIMIT ? OFFSET ?`` and a page of rows
becomes a :class:`~matih_lite.contracts.records.Page` with its next token.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from matih_lite.contracts.records import Page, decode_page_token, encode_page_token
from matih_lite.errors import InvalidInput

T = TypeVar("T")


# ---- how a table's rows belong to a tenant -----------------------------------------------------------
@dataclass(frozen=True)
class Owned:
    """Rows with a ``tenant`` column: reached only through :class:`Scoped`."""


@dataclass(frozen=True)
class Child:
    """Rows of a parent row in ``parent`` (joined by its key), which carries the tenant."""

    parent: str


@dataclass(frozen=True)
class Shared:
    """Rows that are no tenant's (say why)."""

    reason: str


Ownership = Owned | Child | Shared
OWNED = Owned()


class _EveryTenant:
    def __repr__(self) -> str:
        return "EVERY_TENANT"


EVERY_TENANT: Any = _EveryTenant()
"""Scope a statement to every tenant: the deliberate cross-tenant reads and writes, named as such."""


@functools.cache
def owned_tables() -> frozenset[str]:
    """The tables declared :data:`OWNED` in :data:`matih_lite.sqlstore.schema.TABLES`."""
    from matih_lite.sqlstore.schema import TABLES

    return frozenset(name for name, how in TABLES.items() if isinstance(how, Owned))


def _check_owned(table: str) -> None:
    if table not in owned_tables():
        from matih_lite.sqlstore.schema import TABLES

        how = TABLES.get(table)
        if how is None:
            raise ValueError(f"table {table!r} is not declared in any sqlstore module's TABLES; declare it")
        raise ValueError(f"table {table!r} is {how}, not owned by a tenant; query it by its parent's key")


# ---- paging --------------------------------------------------------------------------------------------
class Paging(Generic[T]):
    """One page request: up to ``max_results`` rows from the offset the page token holds.

    ``max_results=None`` means every row from that offset (a metric's whole history).
    """

    __slots__ = ("limit", "offset")

    def __init__(self, page_token: str | None, max_results: int | None) -> None:
        self.offset = decode_page_token(page_token)
        if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)
                                        or max_results < 1):
            raise InvalidInput(f"max_results must be at least 1, got {max_results!r}")
        self.limit = max_results

    @property
    def kind(self) -> str:
        """``limit`` (a page), ``offset`` (everything after a token) or ``""`` (everything)."""
        if self.limit is not None:
            return "limit"
        return "offset" if self.offset else ""

    def params(self) -> tuple[int, ...]:
        """The values for the clause :func:`paging_clause` wrote for :attr:`kind`."""
        if self.limit is not None:
            return (self.limit + 1, self.offset)  # one more than asked: is there a next page?
        return (self.offset,) if self.offset else ()

    def page(self, items: Sequence[T]) -> Page[T]:
        """The first ``max_results`` of ``items`` (fetched with one extra), with the next page's token."""
        if self.limit is not None and len(items) > self.limit:
            return Page(list(items[:self.limit]), encode_page_token(self.offset + self.limit))
        return Page(list(items), None)


def paging_clause(dialect: str, kind: str) -> str:
    """The SQL a :class:`Paging` of ``kind`` appends (its values are :meth:`Paging.params`)."""
    if kind == "limit":
        return " LIMIT ? OFFSET ?"
    if kind == "offset":
        return " LIMIT -1 OFFSET ?" if dialect == "sqlite" else " OFFSET ?"
    return ""


# ---- statements over one tenant's rows ------------------------------------------------------------------
@dataclass(frozen=True)
class Join:
    """``{kind} {table} {alias} ON {on}``; ``params`` are the values of the ``?`` in ``on``."""

    table: str
    alias: str
    on: str
    params: tuple[Any, ...] = ()
    kind: str = "JOIN"

    @property
    def shape(self) -> tuple[str, str, str, str]:
        """The join without its values: what the statement text depends on."""
        return self.table, self.alias, self.on, self.kind


class Scoped:
    """SELECT, INSERT, UPDATE and DELETE over one tenant's rows, on one cursor.

    ``where`` texts are the caller's conditions with ``?`` placeholders; the tenant predicate is
    put first and the caller's text in parentheses after it, so an ``OR`` in it cannot widen the
    scope. The statement text for each shape is built once and cached.
    """

    __slots__ = ("_every", "cur", "dialect", "tenant")

    def __init__(self, cur: Any, dialect: Any, tenant: str) -> None:
        self._every = tenant is EVERY_TENANT
        if not self._every and not isinstance(tenant, str):
            raise TypeError(f"a scope needs a tenant name or EVERY_TENANT, got {tenant!r}")
        self.cur = cur
        self.dialect = dialect
        self.tenant = tenant

    def _tenant_params(self, n: int) -> tuple[Any, ...]:
        return () if self._every else (self.tenant,) * n

    def select(self, table: str, columns: str, where: str = "", params: Sequence[Any] = (), *, alias: str = "",
               joins: Sequence[Join] = (), order: str = "", paging: Paging | None = None) -> list[tuple]:
        """The rows of ``SELECT columns FROM table alias [joins] WHERE <tenant> AND (where) ORDER BY order``."""
        shapes = tuple(j.shape for j in joins)
        kind = paging.kind if paging is not None else ""
        sql, owned_joins, root_scoped = _select_sql(self.dialect.name, self.dialect.placeholder, table, alias,
                                                    columns, where, shapes, order, kind, self._every)
        values: list[Any] = []
        for join, scoped in zip(joins, owned_joins):
            values.extend(join.params)
            if scoped:
                values.append(self.tenant)
        if root_scoped:
            values.append(self.tenant)
        values.extend(params)
        if paging is not None:
            values.extend(paging.params())
        self.cur.execute(sql, tuple(values))
        return self.cur.fetchall()

    def first(self, table: str, columns: str, where: str = "", params: Sequence[Any] = (), *,
              alias: str = "", joins: Sequence[Join] = ()) -> tuple | None:
        """The first row :meth:`select` finds, or None."""
        rows = self.select(table, columns, where, params, alias=alias, joins=joins)
        return rows[0] if rows else None

    def exists(self, table: str, where: str = "", params: Sequence[Any] = ()) -> bool:
        """Whether the tenant has a row of ``table`` matching ``where``."""
        return self.first(table, "1", where, params) is not None

    def insert(self, table: str, values: Mapping[str, Any], *, on_conflict: str = "",
               returning: str = "") -> tuple | None:
        """Insert one row of this tenant (the scope adds the ``tenant`` column); the ``RETURNING`` row if asked."""
        self.insert_many(table, tuple(values), [tuple(values.values())], on_conflict=on_conflict,
                         returning=returning)
        return self.cur.fetchone() if returning else None

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    on_conflict: str = "", returning: str = "") -> None:
        """Insert rows of this tenant (``columns`` without the tenant, which the scope adds)."""
        if self._every:
            raise ValueError("rows are inserted for one tenant; scope to it, not EVERY_TENANT")
        sql = _insert_sql(self.dialect.placeholder, table, tuple(columns), on_conflict, returning)
        if len(rows) == 1:
            self.cur.execute(sql, (self.tenant, *rows[0]))
        elif rows:
            self.cur.executemany(sql, [(self.tenant, *row) for row in rows])

    def update(self, table: str, sets: str, set_params: Sequence[Any] = (), where: str = "",
               params: Sequence[Any] = (), *, returning: str = "") -> Any:
        """``UPDATE table SET sets WHERE <tenant> AND (where)``: the row count, or the ``RETURNING`` row if asked."""
        sql = _update_sql(self.dialect.placeholder, table, sets, where, returning, self._every)
        self.cur.execute(sql, (*set_params, *self._tenant_params(1), *params))
        return self.cur.fetchone() if returning else self.cur.rowcount

    def delete(self, table: str, where: str = "", params: Sequence[Any] = ()) -> int:
        """``DELETE FROM table WHERE <tenant> AND (where)``: the number of rows deleted."""
        sql = _delete_sql(self.dialect.placeholder, table, where, self._every)
        self.cur.execute(sql, (*self._tenant_params(1), *params))
        return self.cur.rowcount


def _placeholders(placeholder: str, text: str) -> str:
    return text if placeholder == "?" else text.replace("?", placeholder)


def _conditions(*parts: str) -> str:
    kept = [p for p in parts if p]
    return f" WHERE {' AND '.join(kept)}" if kept else ""


@functools.lru_cache(maxsize=1024)
def _select_sql(dialect: str, placeholder: str, table: str, alias: str, columns: str, where: str,
                joins: tuple[tuple[str, str, str, str], ...], order: str, paging: str,
                every: bool) -> tuple[str, tuple[bool, ...], bool]:
    _check_owned(table)
    owned = owned_tables()
    name = alias or table
    parts = [f"SELECT {columns} FROM {table}{' ' + alias if alias else ''}"]
    scoped_joins = []
    for j_table, j_alias, on, kind in joins:
        scoped = j_table in owned and not every
        parts.append(f" {kind} {j_table} {j_alias} ON {on}" + (f" AND {j_alias}.tenant = ?" if scoped else ""))
        scoped_joins.append(scoped)
    parts.append(_conditions("" if every else f"{name}.tenant = ?", f"({where})" if where else ""))
    if order:
        parts.append(f" ORDER BY {order}")
    parts.append(paging_clause(dialect, paging))
    return _placeholders(placeholder, "".join(parts)), tuple(scoped_joins), not every


@functools.lru_cache(maxsize=256)
def _insert_sql(placeholder: str, table: str, columns: tuple[str, ...], on_conflict: str, returning: str) -> str:
    _check_owned(table)
    if "tenant" in columns:
        raise ValueError(f"insert into {table}: the scope adds the tenant column; leave it out of the values")
    names = ", ".join(("tenant", *columns))
    marks = ", ".join("?" for _ in range(len(columns) + 1))
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
    if on_conflict:
        sql += f" ON CONFLICT {on_conflict}"
    if returning:
        sql += f" RETURNING {returning}"
    return _placeholders(placeholder, sql)


@functools.lru_cache(maxsize=256)
def _update_sql(placeholder: str, table: str, sets: str, where: str, returning: str, every: bool) -> str:
    _check_owned(table)
    sql = f"UPDATE {table} SET {sets}" + _conditions("" if every else "tenant = ?", f"({where})" if where else "")
    if returning:
        sql += f" RETURNING {returning}"
    return _placeholders(placeholder, sql)


@functools.lru_cache(maxsize=256)
def _delete_sql(placeholder: str, table: str, where: str, every: bool) -> str:
    _check_owned(table)
    return _placeholders(placeholder, f"DELETE FROM {table}"
                         + _conditions("" if every else "tenant = ?", f"({where})" if where else ""))


class ScopedStore:
    """The base of every sqlstore part: its :class:`~matih_lite.sqlstore.database.Database`, and scopes on it."""

    db: Any

    def scoped(self, cur: Any, tenant: str) -> Scoped:
        """Statements over ``tenant``'s rows (or :data:`EVERY_TENANT`'s) on ``cur``."""
        return Scoped(cur, self.db.dialect, tenant)
