"""matih-lite definitions as a Feast repo: ``feature_store.yaml``, a generated ``definitions.py``, and the objects.

Mapping (Feast 0.67):

- an entity with one join key is a Feast ``Entity``; a composite entity (several join keys) is one
  Feast entity per key, named ``<entity>__<key>``, all of them on each of its views (Feast's entities
  take one join key each);
- a parquet source is a ``FileSource`` on the file itself (absolute path: Feast's duckdb store resolves
  relative ones against the working folder); a CSV source is copied to parquet under the repo's
  ``data/`` first (Feast reads parquet only) and copied again when the CSV changes; a query source
  cannot be served by Feast and is refused;
- a push source is a ``PushSource`` over its batch source; on-demand views are not registered in
  Feast: matih-lite applies them itself, the same way over either backend.

The generated ``definitions.py`` builds the same objects, so ``feast -c <repo> plan`` finds nothing to
change and ``feast -c <repo> serve`` serves them.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from matih_lite.contracts.features import FeatureDefinitions, Source
from matih_lite.errors import InvalidInput

FEAST_TYPES = {"float64": "Float64", "float32": "Float32", "int64": "Int64", "int32": "Int32", "string": "String",
               "bool": "Bool", "timestamp": "UnixTimestamp"}
VALUE_TYPES = {"int64": "INT64", "int32": "INT32", "string": "STRING"}


def feast_entities(defs: FeatureDefinitions) -> dict[str, list[tuple[str, str, str]]]:
    """matih-lite entity -> [(Feast entity name, join key, value type)]."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for name, entity in defs.entities.items():
        single = len(entity.join_keys) == 1
        out[name] = [(name if single else f"{name}__{key}", key,
                      VALUE_TYPES.get(entity.dtypes.get(key, "string"), "STRING")) for key in entity.join_keys]
    return out


def parquet_of(source: Source, data_dir: Path) -> str:
    """The parquet file Feast reads for ``source`` (a CSV is copied when newer than its copy). Raises InvalidInput."""
    if source.format == "query":
        raise InvalidInput(f"source '{source.name}': the feast backend serves parquet and CSV sources; a DuckDB "
                           "query source needs the duckdb backend (or write the query's result to parquet)")
    if not os.path.isfile(source.location):
        raise InvalidInput(f"source '{source.name}': file not found: {source.location}")
    if source.format == "parquet":
        return source.location
    target = data_dir / f"{source.name}.parquet"
    if not target.exists() or target.stat().st_mtime < os.stat(source.location).st_mtime:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        pq.write_table(pcsv.read_csv(source.location), tmp)
        os.replace(tmp, target)
    return str(target)


def feast_objects(defs: FeatureDefinitions, data_dir: Path) -> list[Any]:
    """The Feast objects of ``defs`` (entities, sources, push sources, views, services)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
    from feast import types as ftypes
    from feast.value_type import ValueType

    entities = feast_entities(defs)
    objs: list[Any] = []
    by_name: dict[str, Any] = {}
    for name, parts in entities.items():
        for fname, key, vtype in parts:
            ent = Entity(name=fname, join_keys=[key], value_type=getattr(ValueType, vtype),
                         description=defs.entities[name].description)
            by_name[fname] = ent
            objs.append(ent)
    sources: dict[str, Any] = {}
    for src in defs.sources.values():
        sources[src.name] = FileSource(name=src.name, path=parquet_of(src, data_dir),
                                       timestamp_field=src.timestamp_field,
                                       created_timestamp_column=src.created_timestamp_field or "",
                                       description=src.description, owner=src.owner, tags=dict(src.tags))
        objs.append(sources[src.name])
    pushes: dict[str, Any] = {}
    for push in defs.push_sources.values():
        pushes[push.name] = PushSource(name=push.name, batch_source=sources[push.batch_source],
                                       description=push.description)
        objs.append(pushes[push.name])
    views: dict[str, Any] = {}
    for v in defs.feature_views.values():
        ents = [by_name[f] for e in v.entities for f, _, _ in entities[e]]
        schema = [Field(name=k, dtype=getattr(ftypes, FEAST_TYPES[defs_key_dtype(defs, k)])) for k in v.join_keys]
        schema += [Field(name=f.name, dtype=getattr(ftypes, FEAST_TYPES[f.dtype])) for f in v.features]
        views[v.name] = FeatureView(name=v.name, entities=ents, ttl=timedelta(seconds=v.ttl_seconds), schema=schema,
                                    source=pushes[v.push_source] if v.push_source else sources[v.source],
                                    online=v.online, owner=v.owner, description=v.description, tags=dict(v.tags))
        objs.append(views[v.name])
    for svc in defs.services.values():
        grouped: dict[str, list[str]] = {}
        for ref in svc.features:
            view, _, feature = ref.partition(":")
            if view in views:
                grouped.setdefault(view, []).append(feature)
        if grouped:
            objs.append(FeatureService(name=svc.name, features=[views[v][fs] for v, fs in grouped.items()],
                                       owner=svc.owner, description=svc.description, tags=dict(svc.tags)))
    return objs


def defs_key_dtype(defs: FeatureDefinitions, key: str) -> str:
    for entity in defs.entities.values():
        if key in entity.dtypes:
            return entity.dtypes[key]
    return "string"


def feature_store_yaml(project: str, registry: Path, online: dict[str, Any], offline: str) -> str:
    """The repo's ``feature_store.yaml`` (JSON is YAML)."""
    doc = {"project": project, "provider": "local", "registry": {"path": str(registry), "cache_ttl_seconds": 0},
           "online_store": online, "offline_store": {"type": offline}, "entity_key_serialization_version": 3}
    return "# Generated by matih-lite from the features repo; 'matih-lite features apply' rewrites it.\n" + \
        json.dumps(doc, indent=2) + "\n"


def python_source(defs: FeatureDefinitions, data_dir: Path) -> str:
    """A ``definitions.py`` that builds the same objects as :func:`feast_objects` (for Feast's own CLI)."""
    entities = feast_entities(defs)
    lines = ['"""Generated by matih-lite from the features repo; \'matih-lite features apply\' rewrites it."""',
             "", "from datetime import timedelta", "",
             "from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource",
             "from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp",
             "from feast.value_type import ValueType", ""]
    var: dict[str, str] = {}
    for name, parts in entities.items():
        for fname, key, vtype in parts:
            var[f"entity:{fname}"] = f"entity_{fname}"
            lines.append(f"entity_{fname} = Entity(name={fname!r}, join_keys=[{key!r}], value_type=ValueType.{vtype}, "
                         f"description={defs.entities[name].description!r})")
    for src in defs.sources.values():
        lines.append(f"source_{src.name} = FileSource(name={src.name!r}, path={parquet_of(src, data_dir)!r}, "
                     f"timestamp_field={src.timestamp_field!r}, "
                     f"created_timestamp_column={src.created_timestamp_field or ''!r}, "
                     f"description={src.description!r}, owner={src.owner!r}, tags={dict(src.tags)!r})")
    for push in defs.push_sources.values():
        lines.append(f"push_{push.name} = PushSource(name={push.name!r}, batch_source=source_{push.batch_source}, "
                     f"description={push.description!r})")
    for v in defs.feature_views.values():
        ents = ", ".join(f"entity_{f}" for e in v.entities for f, _, _ in entities[e])
        fields = [f"Field(name={k!r}, dtype={FEAST_TYPES[defs_key_dtype(defs, k)]})" for k in v.join_keys]
        fields += [f"Field(name={f.name!r}, dtype={FEAST_TYPES[f.dtype]})" for f in v.features]
        source = f"push_{v.push_source}" if v.push_source else f"source_{v.source}"
        lines.append(f"view_{v.name} = FeatureView(name={v.name!r}, entities=[{ents}], "
                     f"ttl=timedelta(seconds={v.ttl_seconds}), schema=[{', '.join(fields)}], source={source}, "
                     f"online={v.online!r}, owner={v.owner!r}, description={v.description!r}, tags={dict(v.tags)!r})")
    for svc in defs.services.values():
        grouped: dict[str, list[str]] = {}
        for ref in svc.features:
            view, _, feature = ref.partition(":")
            if view in defs.feature_views:
                grouped.setdefault(view, []).append(feature)
        if grouped:
            projections = ", ".join(f"view_{v}[{fs!r}]" for v, fs in grouped.items())
            lines.append(f"service_{svc.name} = FeatureService(name={svc.name!r}, features=[{projections}], "
                         f"owner={svc.owner!r}, description={svc.description!r}, tags={dict(svc.tags)!r})")
    return "\n".join(lines) + "\n"
