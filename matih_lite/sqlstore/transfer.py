"""The :class:`~matih_lite.contracts.transfer.TableTransfer` contract over the shared SQL schema.

Tables, keys and references are read from the engine's catalog (SQLite's pragmas, PostgreSQL's
``pg_catalog``), so a table a later migration adds is copied without a change here. Only tables the
schema declares (:data:`~matih_lite.sqlstore.schema.TABLES`) are offered; ``_migrations`` stays
the target's own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from matih_lite.contracts.transfer import Row, RowMatch, RowPage, SchemaVersion, TableShape
from matih_lite.errors import InvalidInput

_GROUPS_PER_COUNT = 64
_PARAMS_PER_STATEMENT = 30_000
"""Bound on the placeholders in one statement (SQLite allows 32,766; PostgreSQL 65,535)."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def comparable(row: Row) -> Row:
    """A row whose equality means the same on every engine (NaN equals NaN)."""
    return tuple("\x00nan" if isinstance(v, float) and math.isnan(v) else v for v in row)


class SqlTableTransfer:
    """Mixed into :class:`~matih_lite.sqlstore.metadata.SqlMetadataStore`; needs ``self.db``."""

    db: Any
    _shapes: list[TableShape] | None = None

    # ---- the catalog ----------------------------------------------------------------------------
    def schema_version(self) -> SchemaVersion:
        from matih_lite.sqlstore.schema import MIGRATIONS

        applied = self.db.schema_applied()
        return SchemaVersion(applied=applied or 0, current=max(v for v, _, _ in MIGRATIONS))

    def table_shapes(self) -> list[TableShape]:
        if self._shapes is None:
            self._shapes = self._read_catalog()
        return self._shapes

    def _read_catalog(self) -> list[TableShape]:
        from matih_lite.sqlstore.schema import TABLES

        declared = [t for t in TABLES if t != "_migrations"]
        shapes: dict[str, TableShape] = {}
        parents: dict[str, set[str]] = {}
        with self.db.read() as cur:
            present = self._present_tables(cur)
            for table in declared:
                if table not in present:
                    continue
                cur.execute(f"SELECT * FROM {_ident(table)} WHERE 1 = 0")
                columns = tuple(d[0] for d in cur.description)
                cur.fetchall()
                key, references = self._keys_and_references(cur, table)
                parents[table] = {parent for parent, _ in references if parent != table}
                group = None if key else next((col for _, col in references), columns[0])
                shapes[table] = TableShape(name=table, columns=columns, key=key, group=group)
        ordered: list[TableShape] = []
        done: set[str] = set()

        def visit(table: str, path: tuple[str, ...] = ()) -> None:
            if table in done or table in path or table not in shapes:
                return
            for parent in sorted(parents.get(table, ())):
                visit(parent, path + (table,))
            done.add(table)
            ordered.append(shapes[table])

        for table in declared:
            visit(table)
        return ordered

    def _present_tables(self, cur: Any) -> set[str]:
        if self.db.dialect.name == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in cur.fetchall()}

    def _keys_and_references(self, cur: Any, table: str) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """The primary key's columns, and (parent table, referring column) per foreign key."""
        if self.db.dialect.name == "sqlite":
            cur.execute(f"PRAGMA table_info({_ident(table)})")
            info = cur.fetchall()
            key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            cur.execute(f"PRAGMA foreign_key_list({_ident(table)})")
            return key, [(r[2], r[3]) for r in cur.fetchall()]
        q = self.db.dialect.sql
        cur.execute(q("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                      "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(?) AND i.indisprimary "
                      "ORDER BY array_position(i.indkey, a.attnum)"), (_ident(table),))
        key = tuple(r[0] for r in cur.fetchall())
        cur.execute(q("SELECT c.confrelid::regclass::text, a.attname FROM pg_constraint c "
                      "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
                      "WHERE c.contype = 'f' AND c.conrelid = to_regclass(?) ORDER BY c.conname"), (_ident(table),))
        return key, [(r[0].strip('"').rsplit(".", 1)[-1].strip('"'), r[1]) for r in cur.fetchall()]

    def _shape(self, table: str) -> TableShape:
        for shape in self.table_shapes():
            if shape.name == table:
                return shape
        raise InvalidInput(f"no table {table!r} in the metadata schema")

    # ---- reading --------------------------------------------------------------------------------
    def count_rows(self, table: str) -> int:
        shape = self._shape(table)
        with self.db.read() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {_ident(shape.name)}")
            return int(cur.fetchone()[0])

    def read_rows(self, table: str, *, after: Row | None = None, limit: int = 5000) -> RowPage:
        shape = self._shape(table)
        q = self.db.dialect.sql
        cols = ", ".join(map(_ident, shape.columns))
        order = shape.order
        with self.db.read() as cur:
            if shape.key:
                where, params = self._after(order, after)
                cur.execute(q(f"SELECT {cols} FROM {_ident(table)}{where} ORDER BY "
                              f"{', '.join(map(_ident, order))} LIMIT ?"), (*params, limit))
                rows = [tuple(r) for r in cur.fetchall()]
                return RowPage(rows=rows, after=shape.cursor_of(rows[-1]) if len(rows) == limit else None)
            g = _ident(order[0])
            # Whole groups until about ``limit`` rows: counted a few groups at a time, so a page costs
            # what it reads, not a count of every group past the cursor.
            taken, last, more = 0, after[0] if after is not None else None, True
            while taken < limit:
                where, params = self._after(order, (last,) if last is not None else None)
                cur.execute(q(f"SELECT {g}, COUNT(*) FROM {_ident(table)}{where} GROUP BY {g} ORDER BY {g} "
                              f"LIMIT {_GROUPS_PER_COUNT}"), params)
                groups = cur.fetchall()
                for value, n in groups:
                    taken, last = taken + n, value
                    if taken >= limit:
                        break
                if len(groups) < _GROUPS_PER_COUNT and taken < limit:
                    more = False
                    break
            if taken == 0:
                return RowPage(rows=[], after=None)
            where, params = self._after(order, after)
            bound = " AND " if where else " WHERE "
            cur.execute(q(f"SELECT {cols} FROM {_ident(table)}{where}{bound}{g} <= ? ORDER BY "
                          f"{', '.join(map(_ident, shape.columns))}"), (*params, last))
            rows = [tuple(r) for r in cur.fetchall()]
            return RowPage(rows=rows, after=(last,) if more else None)

    @staticmethod
    def _after(order: Sequence[str], after: Row | None) -> tuple[str, tuple[Any, ...]]:
        if after is None:
            return "", ()
        if len(order) == 1:
            return f" WHERE {_ident(order[0])} > ?", (after[0],)
        marks = ", ".join("?" for _ in order)
        return f" WHERE ({', '.join(map(_ident, order))}) > ({marks})", tuple(after)

    # ---- comparing and writing ------------------------------------------------------------------
    def match_rows(self, table: str, rows: Sequence[Row]) -> RowMatch:
        shape = self._shape(table)
        with self.db.read() as cur:
            match, _ = self._match(cur, shape, rows)
        return match

    def insert_rows(self, table: str, rows: Sequence[Row]) -> RowMatch:
        shape = self._shape(table)
        q = self.db.dialect.sql
        sql = q(f"INSERT INTO {_ident(table)} ({', '.join(map(_ident, shape.columns))}) VALUES "
                f"({', '.join('?' for _ in shape.columns)})")

        copy = (f"COPY {_ident(table)} ({', '.join(map(_ident, shape.columns))}) FROM STDIN"
                if self.db.dialect.name == "postgres" else None)

        def write(cur: Any) -> RowMatch:
            match, absent = self._match(cur, shape, rows)
            if match.different or not absent:
                return match
            if copy is not None:  # COPY: an order of magnitude faster than one INSERT per row
                with cur.copy(copy) as stream:
                    for row in absent:
                        stream.write_row(row)
            else:
                cur.executemany(sql, absent)
            return match

        return self.db.write(write)

    def _match(self, cur: Any, shape: TableShape, rows: Sequence[Row]) -> tuple[RowMatch, list[Row]]:
        """The match, and the rows to insert."""
        order = shape.order
        idx = [shape.columns.index(c) for c in order]
        by_key: dict[Row, list[Row]] = {}
        for row in rows:
            by_key.setdefault(tuple(row[i] for i in idx), []).append(tuple(row))
        held: dict[Row, list[Row]] = {}
        keys = list(by_key)
        step = max(1, _PARAMS_PER_STATEMENT // len(order))
        cols = ", ".join(map(_ident, shape.columns))
        for start in range(0, len(keys), step):
            chunk = keys[start:start + step]
            if len(order) == 1:
                where = f"{_ident(order[0])} IN ({', '.join('?' for _ in chunk)})"
                params: list[Any] = [k[0] for k in chunk]
            else:
                one = "(" + ", ".join("?" for _ in order) + ")"
                where = f"({', '.join(map(_ident, order))}) IN (VALUES {', '.join(one for _ in chunk)})"
                params = [v for k in chunk for v in k]
            cur.execute(self.db.dialect.sql(f"SELECT {cols} FROM {_ident(shape.name)} WHERE {where}"), params)
            for row in cur.fetchall():
                held.setdefault(tuple(row[i] for i in idx), []).append(tuple(row))
        absent: list[Row] = []
        equal = 0
        different: list[Row] = []
        for key, mine in by_key.items():
            theirs = held.get(key)
            if not theirs:
                absent.extend(mine)
            elif Counter(map(comparable, theirs)) == Counter(map(comparable, mine)):
                equal += len(mine)
            else:
                different.append(key)
        return RowMatch(absent=len(absent), equal=equal, different=different), absent

    def finish_import(self) -> None:
        if self.db.dialect.name != "postgres":
            return  # SQLite's AUTOINCREMENT moves past an id inserted explicitly by itself

        def run(cur: Any) -> None:
            cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'")
            for table, column in cur.fetchall():
                cur.execute(f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                            f"COALESCE((SELECT MAX({_ident(column)}) FROM {_ident(table)}), 0) + 1, false)",
                            (_ident(table), column))

        self.db.write(run)
        with self.db.read() as cur:  # fresh statistics, so the first queries on the copy use its indexes
            for shape in self.table_shapes():
                cur.execute(f"ANALYZE {_ident(shape.name)}")
