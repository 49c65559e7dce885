"""Feature definitions from the ``*.toml`` files of a repo folder, checked, with the file and key path of every problem.

The shape (keep it stable: users and tests rely on it)::

    [entities.customer]
    join_keys = ["customer_id"]                 # several keys make a composite entity
    dtypes = { customer_id = "int64" }          # optional: read from the sources at apply otherwise

    [sources.customer_stats]
    path = "customer_stats.parquet"             # relative to the repo folder; parquet or CSV; or query = "SELECT ..."
    timestamp_field = "event_timestamp"
    created_timestamp_field = "created"         # optional; breaks ties on event time, newest first

    [push_sources.customer_push]
    batch_source = "customer_stats"             # pushed rows join these offline

    [feature_views.customer_stats]
    entities = ["customer"]
    source = "customer_stats"                   # or a push source
    ttl = "7d"                                  # a row is usable for ttl after its event time; "0": forever
    schema = { conv_rate = "float64", trips = "int64" }
    owner = "growth"
    tags = { team = "growth" }

    [on_demand_feature_views.conv_boost]
    function = "transforms:boost"               # module:function, imported from the repo folder
    sources = ["customer_stats"]                # the function gets these views' features ...
    request_schema = { bonus = "float64" }      # ... and these columns of the request
    schema = { boosted = "float64" }            # and returns these
    mode = "pandas"                             # a DataFrame in and out; "python": dicts of lists

    [feature_services.churn_v1]
    features = ["customer_stats:conv_rate", "customer_stats:trips", "conv_boost:*"]

Every problem found is reported at once, one line each:
``features/customer.toml: feature_views.customer_stats.ttl: expected a duration like "7d", got "7 days"``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matih_lite.contracts.features import (
    DTYPES,
    Entity,
    Feature,
    FeatureDefinitions,
    FeatureService,
    FeatureView,
    OnDemandView,
    PushSource,
    Source,
)
from matih_lite.errors import InvalidInput

SECTIONS: dict[str, str] = {
    "entities": "entities", "sources": "sources", "push_sources": "push_sources", "feature_views": "feature_views",
    "on_demand_feature_views": "on_demand_views", "feature_services": "services",
}
"""Top-level tables of a definitions file, and the :class:`FeatureDefinitions` field each fills."""

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,126}")
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (7 * 86400, 86400, 3600, 60, 1)


class DefinitionError(InvalidInput):
    """Definitions that cannot be used; ``detail["problems"]`` lists each as ``{"file", "key", "message"}``."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        lines = [f"{f}: {k}: {m}" if k else f"{f}: {m}" for f, k, m in problems]
        super().__init__("\n".join(lines), detail={"problems": [{"file": f, "key": k, "message": m}
                                                                for f, k, m in problems]})
        self.problems = problems


def parse_duration(value: Any) -> int:
    """Seconds in ``"7d"``, ``"12h"``, ``"1d12h"``, ``"90m"``, ``"30s"``, ``"2w"`` (or ``0``). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "7d", got {value!r}')
    if isinstance(value, int) and value == 0:
        return 0
    text = value.strip() if isinstance(value, str) else None
    if text == "0":
        return 0
    found = _DURATION.fullmatch(text) if text else None
    if found is None or not any(found.groups()):
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f'expected a duration like "7d", got {shown}')
    return sum(int(g) * unit for g, unit in zip(found.groups(), _UNIT_SECONDS) if g)


def format_duration(seconds: int) -> str:
    """``604800 -> "7d"``, ``0 -> "0"`` (never expires)."""
    if not seconds:
        return "0"
    out = []
    for unit, label in zip(_UNIT_SECONDS[1:], "dhms"):
        if seconds >= unit:
            out.append(f"{seconds // unit}{label}")
            seconds %= unit
    return "".join(out)


def did_you_mean(name: str, known: Any) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or ``""``."""
    near = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else ""


class _Table:
    """One object's table being read: typed getters that report problems under its key path."""

    def __init__(self, loader: _Loader, file: str, key: str, raw: Mapping[str, Any]) -> None:
        self.loader, self.file, self.key, self.raw = loader, file, key, raw
        self.seen: set[str] = set()

    def problem(self, field: str | None, message: str) -> None:
        self.loader.problem(self.file, f"{self.key}.{field}" if field else self.key, message)

    def get(self, field: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False,
            what: str = "") -> Any:
        self.seen.add(field)
        if field not in self.raw:
            if required:
                self.problem(field, f"missing; expected {what or _kind_name(kind)}")
            return default
        value = self.raw[field]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            self.problem(field, f"expected {what or _kind_name(kind)}, got {_shown(value)}")
            return default
        return value

    def text(self, field: str, default: str = "", *, required: bool = False) -> str:
        return self.get(field, str, default, required=required, what="a string")

    def names(self, field: str, *, required: bool = False) -> tuple[str, ...]:
        values = self.get(field, list, [], required=required, what="a list of names")
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                self.problem(f"{field}[{i}]", f"expected a name, got {_shown(v)}")
            elif v not in out:
                out.append(v)
        return tuple(out)

    def tags(self, field: str = "tags") -> dict[str, str]:
        values = self.get(field, dict, {}, what="a table of strings")
        for k, v in values.items():
            if not isinstance(v, str):
                self.problem(f"{field}.{k}", f"expected a string, got {_shown(v)}")
        return {k: v for k, v in values.items() if isinstance(v, str)}

    def schema(self, field: str, *, required: bool = False) -> tuple[Feature, ...]:
        values = self.get(field, dict, {}, required=required, what='a table of name = "dtype"')
        if required and field in self.raw and not values:
            self.problem(field, "declares no features")
        out = []
        for name, dtype in values.items():
            if not NAME.fullmatch(name):
                self.problem(f"{field}.{name}", "a feature name is letters, digits and '_', not starting with a digit")
            elif dtype not in DTYPES:
                hint = did_you_mean(str(dtype), DTYPES)
                self.problem(f"{field}.{name}", f"unknown dtype {_shown(dtype)}; dtypes are {', '.join(DTYPES)}{hint}")
            else:
                out.append(Feature(name, dtype))
        return tuple(out)

    def done(self) -> None:
        for field in self.raw:
            if field not in self.seen:
                self.problem(field, f"unknown key{did_you_mean(field, self.seen)}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "a table", bool: "true or false", int: "an integer"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Loader:
    def __init__(self, label: str, root: Path) -> None:
        self.label = label
        self.root = root
        self.problems: list[tuple[str, str, str]] = []
        self.objects: dict[str, dict[str, Any]] = {field: {} for field in SECTIONS.values()}
        self.files: dict[str, str] = {}

    def problem(self, file: str, key: str, message: str) -> None:
        self.problems.append((file, key, message))

    def shown(self, file: str) -> str:
        return f"{self.label}/{file}" if self.label else file

    # ---- files -------------------------------------------------------------------------------------
    def parse_file(self, rel: str, text: str) -> None:
        file = self.shown(rel)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.problem(file, "", f"not valid TOML: {exc}")
            return
        for section, body in data.items():
            field = SECTIONS.get(section)
            if field is None:
                self.problem(file, section, f"unknown section{did_you_mean(section, SECTIONS)}; sections are "
                                            f"{', '.join(SECTIONS)}")
                continue
            if not isinstance(body, dict):
                self.problem(file, section, f"expected tables like [{section}.NAME], got {_shown(body)}")
                continue
            for name, raw in body.items():
                key = f"{section}.{name}"
                if not isinstance(raw, dict):
                    self.problem(file, key, f"expected a table, got {_shown(raw)}")
                    continue
                if not NAME.fullmatch(name):
                    self.problem(file, key, "a name is letters, digits and '_', not starting with a digit")
                    continue
                first = self.files.get(f"{field}.{name}")
                if first is not None:
                    self.problem(file, key, f"declared twice: also in {self.shown(first)}")
                    continue
                obj = getattr(self, f"_{field}")(_Table(self, file, key, raw), name)
                if obj is not None:
                    self.objects[field][name] = obj
                    self.files[f"{field}.{name}"] = rel

    # ---- one parser per section ----------------------------------------------------------------------
    def _entities(self, t: _Table, name: str) -> Entity:
        keys = t.names("join_keys", required=True)
        if "join_keys" in t.raw and not keys:
            t.problem("join_keys", "an entity needs at least one join key")
        dtypes = t.get("dtypes", dict, {}, what='a table of join_key = "dtype"')
        for key, dtype in dtypes.items():
            if key not in keys:
                t.problem(f"dtypes.{key}", f"not a join key of this entity{did_you_mean(key, keys)}")
            elif dtype not in DTYPES:
                t.problem(f"dtypes.{key}", f"unknown dtype {_shown(dtype)}; dtypes are {', '.join(DTYPES)}")
        out = Entity(name, keys, {k: v for k, v in dtypes.items() if k in keys and v in DTYPES},
                     t.text("description"), t.tags())
        t.done()
        return out

    def _sources(self, t: _Table, name: str) -> Source | None:
        path, query = t.text("path"), t.text("query")
        timestamp = t.text("timestamp_field", "event_timestamp")
        created = t.text("created_timestamp_field") or None
        fmt = t.text("format")
        common = dict(description=t.text("description"), owner=t.text("owner"), tags=t.tags())
        t.done()
        if bool(path) == bool(query):
            t.problem(None, "give either path = \"FILE\" (parquet or CSV, relative to the repo folder) or "
                            "query = \"SELECT ...\", not " + ("both" if path else "neither"))
            return None
        if query:
            if fmt and fmt != "query":
                t.problem("format", f"a query source has no file format, got {_shown(fmt)}")
            return Source(name, "query", timestamp, query=query, created_timestamp_field=created, **common)
        if not fmt:
            suffix = Path(path).suffix.lower()
            fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}.get(suffix, "")
            if not fmt and "*" in path:
                fmt = "parquet" if ".parquet" in path or ".pq" in path else "csv" if ".csv" in path else ""
            if not fmt:
                t.problem("path", f"cannot tell the format of {_shown(path)}; name a .parquet or .csv file, or add "
                                  "format = \"parquet\" | \"csv\"")
                return None
        elif fmt not in ("parquet", "csv"):
            t.problem("format", f"expected \"parquet\" or \"csv\", got {_shown(fmt)}")
            return None
        location = Path(path).expanduser()
        location = location if location.is_absolute() else (self.root / location)
        return Source(name, fmt, timestamp, location=str(location.resolve()) if "*" not in path else str(location),
                      path=path, created_timestamp_field=created, **common)  # type: ignore[arg-type]

    def _push_sources(self, t: _Table, name: str) -> PushSource:
        out = PushSource(name, t.text("batch_source", required=True), t.text("description"))
        t.done()
        return out

    def _feature_views(self, t: _Table, name: str) -> FeatureView | None:
        entities = t.names("entities", required=True)
        if "entities" in t.raw and not entities:
            t.problem("entities", "a feature view needs at least one entity")
        source = t.text("source", required=True)
        ttl = 0
        t.seen.add("ttl")
        if "ttl" in t.raw:
            try:
                ttl = parse_duration(t.raw["ttl"])
            except ValueError as exc:
                t.problem("ttl", str(exc))
        features = t.schema("schema", required=True)
        online = t.get("online", bool, True)
        out = FeatureView(name, entities, (), source, features, ttl, None, online, t.text("owner"),
                          t.text("description"), t.tags())
        t.done()
        return out

    def _on_demand_views(self, t: _Table, name: str) -> OnDemandView | None:
        function = t.text("function", required=True)
        if function and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", function):
            t.problem("function", f'expected "module:function", got {_shown(function)}')
        mode = t.text("mode", "pandas")
        if mode not in ("pandas", "python"):
            t.problem("mode", f'expected "pandas" or "python", got {_shown(mode)}')
            mode = "pandas"
        out = OnDemandView(name, function, t.names("sources"), t.schema("schema", required=True),
                           t.schema("request_schema"), mode, t.text("owner"), t.text("description"),  # type: ignore[arg-type]
                           t.tags())
        t.done()
        return out

    def _services(self, t: _Table, name: str) -> FeatureService:
        out = FeatureService(name, t.names("features", required=True), t.text("owner"), t.text("description"),
                             t.tags())
        t.done()
        return out

    # ---- across files ------------------------------------------------------------------------------
    def where(self, field: str, name: str) -> str:
        file = self.files.get(f"{field}.{name}", "")
        return self.shown(file) if file else "?"

    def link(self) -> dict[str, Any]:
        o = self.objects
        entities: dict[str, Entity] = o["entities"]
        sources: dict[str, Source] = o["sources"]
        pushes: dict[str, PushSource] = o["push_sources"]
        for push in pushes.values():
            if push.batch_source and push.batch_source not in sources:
                self.problem(self.where("push_sources", push.name), f"push_sources.{push.name}.batch_source",
                             f"no source '{push.batch_source}'{did_you_mean(push.batch_source, sources)}")
        views: dict[str, FeatureView] = {}
        for view in o["feature_views"].values():
            file, key = self.where("feature_views", view.name), f"feature_views.{view.name}"
            keys: list[str] = []
            for ent in view.entities:
                if ent not in entities:
                    self.problem(file, f"{key}.entities", f"no entity '{ent}'{did_you_mean(ent, entities)}")
                    continue
                keys.extend(k for k in entities[ent].join_keys if k not in keys)
            batch, push = view.source, None
            if view.source in pushes:
                push, batch = view.source, pushes[view.source].batch_source
            elif view.source and view.source not in sources:
                near = did_you_mean(view.source, [*sources, *pushes])
                self.problem(file, f"{key}.source", f"no source or push source '{view.source}'{near}")
            src = sources.get(batch)
            for f in view.features:
                if f.name in keys:
                    self.problem(file, f"{key}.schema.{f.name}", "is a join key of the view's entities, not a feature")
                if src is not None and f.name in (src.timestamp_field, src.created_timestamp_field):
                    self.problem(file, f"{key}.schema.{f.name}", f"is the timestamp field of source '{src.name}'")
            views[view.name] = FeatureView(view.name, view.entities, tuple(keys), batch, view.features,
                                           view.ttl_seconds, push, view.online, view.owner, view.description,
                                           view.tags)
        odfvs: dict[str, OnDemandView] = o["on_demand_views"]
        for odfv in odfvs.values():
            file, key = self.where("on_demand_views", odfv.name), f"on_demand_feature_views.{odfv.name}"
            if odfv.name in views:
                self.problem(file, key, f"the name is taken by feature view '{odfv.name}' "
                                        f"({self.where('feature_views', odfv.name)})")
            inputs: set[str] = {r.name for r in odfv.request_schema}
            for src_name in odfv.sources:
                if src_name not in views:
                    self.problem(file, f"{key}.sources", f"no feature view '{src_name}'{did_you_mean(src_name, views)}"
                                 + (" (an on-demand view cannot read another)" if src_name in odfvs else ""))
                else:
                    inputs |= {f.name for f in views[src_name].features}
            if not odfv.sources and not odfv.request_schema:
                self.problem(file, key, "reads nothing: give sources = [\"VIEW\", ...] or request_schema")
            for f in odfv.features:
                if f.name in inputs:
                    self.problem(file, f"{key}.schema.{f.name}", "is also an input of the function; name it apart")
        services: dict[str, FeatureService] = {}
        for svc in o["services"].values():
            file, key = self.where("services", svc.name), f"feature_services.{svc.name}"
            refs: list[str] = []
            for i, ref in enumerate(svc.features):
                try:
                    for r in expand_ref(ref, views, odfvs):
                        if r not in refs:
                            refs.append(r)
                except InvalidInput as exc:
                    self.problem(file, f"{key}.features[{i}]", exc.message)
            services[svc.name] = FeatureService(svc.name, tuple(refs), svc.owner, svc.description, svc.tags)
        return {"entities": entities, "sources": sources, "push_sources": pushes, "feature_views": views,
                "on_demand_views": odfvs, "services": services}


def expand_ref(ref: str, views: Mapping[str, FeatureView], odfvs: Mapping[str, OnDemandView]) -> list[str]:
    """``"view:feature"`` checked, ``"view:*"`` (or ``"view"``) as every feature of the view. Raises InvalidInput
    naming the unknown view or feature, with a did-you-mean."""
    view_name, _, feature = ref.partition(":")
    owner = views.get(view_name) or odfvs.get(view_name)
    if owner is None:
        raise InvalidInput(f"unknown feature view '{view_name}' in '{ref}'{did_you_mean(view_name, [*views, *odfvs])}")
    names = [f.name for f in owner.features]
    if feature in ("", "*"):
        return [f"{view_name}:{n}" for n in names]
    if feature not in names:
        refs = [f"{v}:{f.name}" for v in (*views.values(), *odfvs.values()) for f in v.features]
        hint = did_you_mean(feature, names) or did_you_mean(ref, refs)
        raise InvalidInput(f"unknown feature '{feature}' of view '{view_name}' in '{ref}'{hint} "
                           f"({view_name} has: {', '.join(names)})")
    return [ref]


def parse_files(files: Mapping[str, str], *, project: str, root: str | Path, label: str = "") -> FeatureDefinitions:
    """Definitions from ``{relative file name: TOML text}``; ``root`` resolves relative source paths and
    ``label`` prefixes file names in messages. Raises DefinitionError listing every problem."""
    loader = _Loader(label, Path(root))
    for name in sorted(files):
        loader.parse_file(name, files[name])
    linked = loader.link()
    if loader.problems:
        raise DefinitionError(loader.problems)
    return FeatureDefinitions(project=project, root=str(Path(root)), files=dict(loader.files), **linked)


def read_repo(root: str | Path, *, label: str = "") -> dict[str, str]:
    """``{relative path: text}`` of every ``*.toml`` under ``root`` (recursively). Raises InvalidInput when the
    folder is missing or holds none."""
    folder = Path(root)
    if not folder.is_dir():
        raise InvalidInput(f"{label or folder}: the features repo folder does not exist; create it with your *.toml "
                           "definitions, or set profiles.<name>.features.repo in matih.toml")
    files = {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.toml"))
             if not any(part.startswith(".") for part in p.relative_to(folder).parts)}
    if not files:
        raise InvalidInput(f"{label or folder}: no *.toml feature definitions in the features repo folder")
    return files


def load_repo(root: str | Path, *, project: str, label: str = "") -> FeatureDefinitions:
    """Parse every ``*.toml`` file of the repo folder ``root``. Raises InvalidInput, DefinitionError."""
    return parse_files(read_repo(root, label=label), project=project, root=Path(root).resolve(), label=label)
