"""Definitions checked against their sources: the files exist, the columns are there with usable types.

Run by ``plan`` and ``apply`` before anything is recorded, whatever the backend, so a failed apply
changes nothing. The sources are described with DuckDB (``DESCRIBE``: parquet metadata, a CSV's
sniffed header, a query's result type), never read whole. The join keys' types, when an entity
does not declare them, are taken from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from matih_lite.contracts.features import FeatureDefinitions, Source
from matih_lite.errors import InvalidInput
from matih_lite.features.definitions import DefinitionError, did_you_mean

_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
_FLOAT = {"FLOAT", "DOUBLE", "REAL"}
_TIMESTAMP = {"TIMESTAMP", "DATE"}
_ACCEPTS: dict[str, set[str]] = {
    "int64": _INTEGER, "int32": _INTEGER, "float64": _INTEGER | _FLOAT | {"DECIMAL"},
    "float32": _INTEGER | _FLOAT | {"DECIMAL"}, "string": {"VARCHAR", "UUID", "ENUM"}, "bool": {"BOOLEAN"},
    "timestamp": _TIMESTAMP,
}


def _family(duckdb_type: str) -> str:
    base = duckdb_type.split("(")[0].strip()
    if base.startswith("TIMESTAMP"):
        return "TIMESTAMP"  # every unit, with or without a time zone (TIMESTAMPTZ_NS, TIMESTAMP_MS, ...)
    return "ENUM" if base.startswith("ENUM") else base


def relation_sql(source: Source) -> str:
    """The DuckDB table expression reading ``source`` as it is (no copy)."""
    if source.format == "query":
        return f"({source.query})"
    path = source.location.replace("'", "''")
    if source.format == "csv":
        return f"read_csv('{path}', header = true)"
    return f"read_parquet('{path}')"


def describe(source: Source, con: Any = None) -> dict[str, str]:
    """Column name -> DuckDB type of ``source``. Raises InvalidInput naming the source when it cannot be read."""
    import duckdb

    if source.format != "query" and "*" not in source.location and not Path(source.location).is_file():
        raise InvalidInput(f"source '{source.name}': file not found: {source.location}")
    own = con is None
    con = con or duckdb.connect()
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation_sql(source)}").fetchall()
    except duckdb.Error as exc:
        what = "query" if source.format == "query" else f"{source.format} file {source.location}"
        raise InvalidInput(f"source '{source.name}': cannot read its {what}: {str(exc).splitlines()[0]}") from exc
    finally:
        if own:
            con.close()
    return {r[0]: r[1] for r in rows}


def key_dtype(duckdb_type: str) -> str | None:
    """The dtype a join key of this column type takes (``int64`` or ``string``); None when it cannot be a key."""
    family = _family(duckdb_type)
    if family in _INTEGER:
        return "int64"
    if family in ("VARCHAR", "UUID", "ENUM"):
        return "string"
    return None


def check_definitions(defs: FeatureDefinitions, *, label: str | None = None) -> FeatureDefinitions:
    """``defs`` checked against the sources, with every entity's join-key dtypes filled in.

    Raises DefinitionError (file and key path of each problem): a source missing or unreadable, a
    column missing or of a type that does not fit its declared dtype, join keys without a usable type.
    """
    import duckdb

    problems: list[tuple[str, str, str]] = []
    label = _label(defs) if label is None else label

    def where(field: str, name: str) -> str:
        rel = defs.files.get(f"{field}.{name}", "")
        return f"{label}/{rel}" if label and rel else rel or label

    con = duckdb.connect()
    try:
        if defs.root:
            con.execute("SET file_search_path = ?", [defs.root])
        columns: dict[str, dict[str, str]] = {}
        for src in defs.sources.values():
            try:
                columns[src.name] = describe(src, con)
            except InvalidInput as exc:
                key = "query" if src.format == "query" else "path"
                problems.append((where("sources", src.name), f"sources.{src.name}.{key}", exc.message))
                continue
            cols = columns[src.name]
            for field in ("timestamp_field", "created_timestamp_field"):
                name = getattr(src, field)
                if name is None:
                    continue
                if name not in cols:
                    problems.append((where("sources", src.name), f"sources.{src.name}.{field}",
                                     f"no column '{name}' in the source{did_you_mean(name, cols)}; it has: "
                                     f"{', '.join(cols)}"))
                elif _family(cols[name]) not in _TIMESTAMP:
                    problems.append((where("sources", src.name), f"sources.{src.name}.{field}",
                                     f"column '{name}' is {cols[name]}, not a timestamp"))
    finally:
        con.close()
    key_types: dict[str, dict[str, str]] = {name: dict(e.dtypes) for name, e in defs.entities.items()}
    for view in defs.feature_views.values():
        cols = columns.get(view.source)
        if cols is None:
            continue
        file = where("feature_views", view.name)
        for f in view.features:
            key = f"feature_views.{view.name}.schema.{f.name}"
            if f.name not in cols:
                problems.append((file, key, f"no column '{f.name}' in source '{view.source}'"
                                            f"{did_you_mean(f.name, cols)}; it has: {', '.join(cols)}"))
            elif _family(cols[f.name]) not in _ACCEPTS[f.dtype]:
                problems.append((file, key, f"declared {f.dtype}, but column '{f.name}' of source '{view.source}' "
                                            f"is {cols[f.name]}"))
        for ent in view.entities:
            entity = defs.entities[ent]
            for join_key in entity.join_keys:
                if join_key not in cols:
                    problems.append((file, f"feature_views.{view.name}.entities",
                                     f"source '{view.source}' has no column '{join_key}' (a join key of entity "
                                     f"'{ent}'){did_you_mean(join_key, cols)}"))
                    continue
                found = key_dtype(cols[join_key])
                declared = key_types[ent].get(join_key)
                if found is None:
                    problems.append((file, f"feature_views.{view.name}.entities",
                                     f"join key '{join_key}' of source '{view.source}' is {cols[join_key]}; a join "
                                     "key is an integer or a string"))
                elif declared is None:
                    key_types[ent][join_key] = found
                elif _ACCEPTS[declared] & {_family(cols[join_key])} == set():
                    problems.append((file, f"feature_views.{view.name}.entities",
                                     f"join key '{join_key}' is {declared} (entity '{ent}'), but source "
                                     f"'{view.source}' has it as {cols[join_key]}"))
    if problems:
        raise DefinitionError(problems)
    # An entity no view uses keeps only the dtypes it declares.
    entities = {name: msgspec.structs.replace(e, dtypes={k: key_types[name][k] for k in e.join_keys
                                                         if k in key_types[name]})
                for name, e in defs.entities.items()}
    return msgspec.structs.replace(defs, entities=entities)


def _label(defs: FeatureDefinitions) -> str:
    """The repo folder as messages name it: relative to the working folder when inside it."""
    if not defs.root:
        return ""
    root = Path(defs.root)
    try:
        return root.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(root)
