"""Lineage rules written once: node keys, what the platform records, graph walks, OpenLineage export.

Edges point the way data flows::

    dataset:s3://b/train.parquet@v3 --consumed_by--> run:<id> --produced--> model:churn/3
        --deployed_as--> deployment:churn-prod

so *upstream* of a model version are the run that trained it and the data that run read,
and *downstream* of a dataset is everything built from it. Walks go level by level, one
store query per level (the same on SQLite and PostgreSQL), stop at ``depth`` and never loop
on a cycle.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from matih_lite import __version__
from matih_lite.contracts.clock import MAX_MS, now_ms
from matih_lite.contracts.lineage import Direction, LineageEdge, LineageNode
from matih_lite.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from matih_lite.host import Host


KIND_BY_PREFIX: dict[str, str] = {
    "dataset": "dataset", "table": "table", "feature_view": "feature_view", "feature_service": "feature_service",
    "run": "run", "model": "model_version", "deployment": "deployment",
}
"""A key's prefix (before the first ``:``) names its kind: ``model:churn/3`` is a model_version."""
PREFIX_BY_KIND = {kind: prefix for prefix, kind in KIND_BY_PREFIX.items()}
DATA_KINDS = ("dataset", "table", "feature_view", "feature_service")

CONSUMED_BY = "consumed_by"
PRODUCED = "produced"
DEPLOYED_AS = "deployed_as"

DATASET_TAG = "matih.dataset."
"""Prefix of the run tags naming the data a run read: ``matih.dataset.<name>`` = a URI, or JSON
with at least ``uri`` (the registry's format: it copies them into a version's training data)."""

MAX_DEPTH = 100
MAX_NODES = 10_000
MAX_KEY = 2000
PRODUCER = f"https://github.com/matih/matih-lite/tree/v{__version__}"
OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_FACET_SCHEMAS = {
    "version": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json"
               "#/$defs/DatasetVersionDatasetFacet",
}


# ---- keys ---------------------------------------------------------------------------------------
def dataset_key(uri: str, version: str | None = None) -> str:
    """``dataset:<uri>`` or ``dataset:<uri>@<version>``."""
    return f"dataset:{uri}@{version}" if version else f"dataset:{uri}"


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def model_key(model: str, version: str | int) -> str:
    return f"model:{model}/{version}"


def deployment_key(name: str) -> str:
    return f"deployment:{name}"


def kind_of(key: str) -> str:
    """The kind a key names, or InvalidInput listing the prefixes there are."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput("a lineage key must be a non-empty string such as 'run:<run_id>'")
    if len(key) > MAX_KEY:
        raise InvalidInput(f"lineage key is {len(key)} characters; the limit is {MAX_KEY}")
    prefix, sep, rest = key.partition(":")
    kind = KIND_BY_PREFIX.get(prefix)
    if not sep or kind is None or not rest:
        raise InvalidInput(f"lineage key {key[:80]!r} must start with one of "
                           f"{', '.join(p + ':' for p in KIND_BY_PREFIX)} followed by a name "
                           "(e.g. 'dataset:s3://bucket/train.parquet@v3', 'run:<run_id>', 'model:churn/3')")
    return kind


def check_kind(key: str, kind: str | None) -> str:
    """The key's kind, checked against ``kind`` when one is given."""
    found = kind_of(key)
    if kind is not None and kind != found:
        raise InvalidInput(f"lineage key {key!r} names a {found}, not a {kind}; "
                           f"{kind} keys start with '{PREFIX_BY_KIND.get(kind, kind)}:'")
    return found


def openlineage_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a data URI as OpenLineage's naming conventions write them.

    ``s3://bucket/a/b.parquet`` -> (``s3://bucket``, ``a/b.parquet``); ``postgres://h:5432/db.t``
    -> (``postgres://h:5432``, ``db.t``); a plain path -> (``file``, the path).
    """
    parts = urlsplit(uri)
    if parts.scheme and len(parts.scheme) > 1:  # "C:\\data" is a Windows path, not a scheme
        if parts.scheme == "file":
            return "file", parts.path
        if parts.netloc:
            return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"
        return parts.scheme, parts.path or uri
    return "file", uri


# ---- results ------------------------------------------------------------------------------------
class LineageGraph(msgspec.Struct, frozen=True):
    """What a walk found: the nodes (``distance`` hops from ``root``) and the edges between them.

    ``truncated`` is true when nodes lay beyond ``depth`` (or past the node limit).
    """

    root: str
    direction: str
    depth: int
    nodes: list[LineageNode]
    distances: dict[str, int]
    edges: list[LineageEdge]
    truncated: bool = False


class Lineage:
    """Lineage of one platform (a :class:`~matih_lite.host.Host`): recording, walking, exporting.

    Building one also hooks the lineage recorder into the host's events (once per host), so a
    model registered or deployed through this host is linked to its run even without a service.
    """

    def __init__(self, host: Host, *, attach: bool = True) -> None:
        self.host = host
        if attach:
            from matih_lite.lineage.recorder import attach_recorder

            attach_recorder(host)

    @property
    def store(self) -> Any:
        return self.host.metadata

    # ---- nodes and edges ----------------------------------------------------------------------
    def record_node(self, tenant: str, key: str, *, kind: str | None = None, name: str = "",
                    properties: Mapping[str, Any] | None = None) -> LineageNode:
        """Create a node or merge ``properties`` into it; the kind comes from the key's prefix."""
        kind = check_kind(key, kind)
        if properties is not None and not isinstance(properties, Mapping):
            raise InvalidInput("lineage node properties must be a JSON object")
        return self.store.put_lineage_node(tenant, key, kind=kind, name=name or "", properties=properties,
                                           at=now_ms())

    def record_edge(self, tenant: str, source: str, target: str, kind: str) -> LineageEdge:
        """``source -> target``; recording it again changes nothing. Both nodes must exist."""
        kind_of(source)
        kind_of(target)
        if source == target:
            raise InvalidInput(f"a lineage edge joins two nodes; {source!r} -> itself is not one")
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", kind):
            raise InvalidInput(f"edge kind {kind!r} must be lower-case letters, digits and '_' "
                               "(e.g. consumed_by, produced, deployed_as)")
        return self.store.add_lineage_edge(tenant, source, target, kind=kind, at=now_ms())

    def get_node(self, tenant: str, key: str) -> LineageNode:
        """The node of ``key``. Raises NotFound (a registered version is looked up in the registry first)."""
        kind = kind_of(key)
        found = self.store.get_lineage_nodes(tenant, [key]).get(key)
        if found is None and kind == "model_version":
            found = self._from_registry(tenant, key)
        if found is None:
            raise NotFound(f"no lineage recorded for {key!r}")
        return found

    def _from_registry(self, tenant: str, key: str) -> LineageNode | None:
        """A version registered where no recorder listened (embedded, before any lineage call):
        its run -> version edge is a fact of the registry, so record it now."""
        name, _, version = key.partition(":")[2].rpartition("/")
        getter = getattr(self.store, "get_model_version", None)
        if not name or not version.isdigit() or getter is None:
            return None
        try:
            mv = getter(tenant, name, int(version))
        except NotFound:
            return None
        props = {k: v for k, v in (("source", mv.source), ("flavor", mv.flavor), ("stage", mv.stage)) if v}
        return self.record_version(tenant, mv.run_id, mv.name, mv.version, properties=props)

    def list_nodes(self, tenant: str, *, kind: str | None = None, max_results: int = 1000,
                   page_token: str | None = None) -> Any:
        """A page of the tenant's nodes, oldest first; only ``kind`` (dataset, run, ...) when given."""
        if kind is not None and kind not in KIND_BY_PREFIX.values():
            raise InvalidInput(f"kind must be one of {', '.join(KIND_BY_PREFIX.values())}, not {kind!r}")
        return self.store.list_lineage_nodes(tenant, kind=kind, max_results=max_results, page_token=page_token)

    # ---- walks --------------------------------------------------------------------------------
    def upstream(self, tenant: str, key: str, depth: int = 5) -> LineageGraph:
        """What ``key`` was built from, up to ``depth`` hops back."""
        return self.walk(tenant, key, "upstream", depth)

    def downstream(self, tenant: str, key: str, depth: int = 5) -> LineageGraph:
        """What was built from ``key``, up to ``depth`` hops on."""
        return self.walk(tenant, key, "downstream", depth)

    def walk(self, tenant: str, key: str, direction: Direction, depth: int = 5) -> LineageGraph:
        """Breadth first from ``key``, one query per level; each node once, at its shortest distance."""
        if direction not in ("upstream", "downstream"):
            raise InvalidInput(f"direction must be upstream or downstream, not {direction!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
            raise InvalidInput(f"depth must be between 0 and {MAX_DEPTH}, got {depth!r}")
        root = self.get_node(tenant, key)
        distances = {key: 0}
        edges: list[LineageEdge] = []
        frontier = [key]
        truncated = False
        level = 0
        while frontier:
            found = self.store.lineage_edges(tenant, frontier, direction=direction)
            if level == depth:
                truncated = any((e.source if direction == "upstream" else e.target) not in distances for e in found)
                break
            level += 1
            next_frontier = []
            for edge in found:
                other = edge.source if direction == "upstream" else edge.target
                if other not in distances:
                    if len(distances) >= MAX_NODES:
                        truncated = True
                        continue
                    distances[other] = level
                    next_frontier.append(other)
                if other in distances:
                    edges.append(edge)
            frontier = next_frontier
        nodes = self.store.get_lineage_nodes(tenant, list(distances))
        ordered = [root] + sorted((n for k, n in nodes.items() if k != key),
                                  key=lambda n: (distances[n.key], n.kind, n.key))
        return LineageGraph(key, direction, depth, ordered, distances, _unique(edges), truncated)

    # ---- what the platform records --------------------------------------------------------------
    def record_run_input(self, tenant: str, run_id: str, dataset_uri: str, version: str | None = None,
                         digest: str | None = None, *, name: str | None = None,
                         properties: Mapping[str, Any] | None = None) -> LineageNode:
        """``dataset -> run`` (consumed_by); returns the dataset node. Raises NotFound for the run."""
        uri = _text(dataset_uri, "dataset uri")
        version = _opt_text(version, "dataset version")
        digest = _opt_text(digest, "dataset digest")
        run = self._run_node(tenant, run_id, strict=True)
        namespace, ol_name = openlineage_dataset(uri)
        props: dict[str, Any] = {"uri": uri, "namespace": namespace, "name": ol_name}
        if version:
            props["version"] = version
        if digest:
            props["digest"] = digest
        props.update(properties or {})
        node = self.record_node(tenant, dataset_key(uri, version), name=name or "", properties=props)
        self.record_edge(tenant, node.key, run.key, CONSUMED_BY)
        return node

    def log_input(self, tenant: str, run_id: str, dataset_uri: str, version: str | None = None,
                  digest: str | None = None, name: str | None = None, *,
                  properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What ``ml.log_input`` does: the lineage edge, and the run tag the registry reads.

        The tag is ``matih.dataset.<name>`` holding ``{"uri", "version", "digest", ...properties}``
        as JSON (the registry copies it into the version's training data). ``name`` defaults to
        the URI's last segment; logging the same uri and version again reuses its tag, another
        dataset of the same name gets ``<name>-2``. ``properties`` (``start_date``, ``end_date``,
        ``rows``, ``quality_score``...) go on the dataset node and into the tag.
        Returns ``{"name": <tag name>, "node": <dataset node>, "tags": {...}}``.
        """
        import json

        from matih_lite.tracking import Tracking

        extra = dict(properties or {})
        try:
            json.dumps(extra)
        except (TypeError, ValueError):
            raise InvalidInput("dataset properties must be plain JSON values") from None
        node = self.record_run_input(tenant, run_id, dataset_uri, version, digest, name=name, properties=extra)
        tracking = Tracking(self.host)
        refs = {r["name"]: r for r in dataset_refs(tracking.get_run(tenant, run_id).tags)}
        uri, version = node.properties["uri"], node.properties.get("version")
        base = _tag_name(name or uri.rstrip("/").rsplit("/", 1)[-1] or uri)
        tag_name, n = base, 1
        while tag_name in refs and (refs[tag_name].get("uri"), refs[tag_name].get("version")) != (uri, version):
            n += 1
            tag_name = f"{base}-{n}"
        value = {"uri": uri, **({"version": version} if version else {}),
                 **({"digest": node.properties["digest"]} if node.properties.get("digest") else {}), **extra}
        text = json.dumps(value, sort_keys=True)
        if len(text) > 8000:
            raise InvalidInput(f"the dataset reference is {len(text)} characters as JSON; the limit is 8000 "
                               "(keep properties small)")
        tags = {DATASET_TAG + tag_name: text}
        tracking.log_batch(tenant, run_id, tags=tags)
        return {"name": tag_name, "node": node, "tags": tags}

    def record_version(self, tenant: str, run_id: str | None, model: str, version: str | int, *,
                       properties: Mapping[str, Any] | None = None) -> LineageNode:
        """``run -> model version`` (produced); a version registered from a bare URI gets its node only."""
        props = {"model": _text(model, "model name"), "version": str(version), **(properties or {})}
        node = self.record_node(tenant, model_key(model, version), name=f"{model} v{version}", properties=props)
        if run_id:
            run = self._run_node(tenant, run_id, strict=False)
            self.record_edge(tenant, run.key, node.key, PRODUCED)
        return node

    def record_deployment(self, tenant: str, model: str, version: str | int, deployment: str, *,
                          properties: Mapping[str, Any] | None = None) -> LineageNode:
        """``model version -> deployment`` (deployed_as); the deployment keeps every version it served."""
        name = _text(deployment, "deployment name")
        mv = self.record_node(tenant, model_key(model, version), name=f"{model} v{version}",
                              properties={"model": model, "version": str(version)})
        node = self.record_node(tenant, deployment_key(name), name=name,
                                properties={"model": model, "version": str(version), **(properties or {})})
        self.record_edge(tenant, mv.key, node.key, DEPLOYED_AS)
        return node

    def _run_node(self, tenant: str, run_id: str, *, strict: bool) -> LineageNode:
        """The run's node, with its name and experiment read from tracking (NotFound when ``strict``)."""
        run_id = _text(run_id, "run id")
        props: dict[str, Any] = {"run_id": run_id}
        name = ""
        try:
            run = self.host.metadata.get_run(tenant, run_id)
        except NotFound:
            if strict:
                raise
        else:
            name = run.name
            props.update({"experiment_id": run.experiment_id, "status": run.status, "start_time": run.start_time,
                          "end_time": run.end_time})
            try:
                props["experiment"] = self.host.metadata.get_experiment(tenant, run.experiment_id).name
            except NotFound:
                pass
        return self.record_node(tenant, run_key(run_id), name=name, properties=props)

    # ---- OpenLineage ----------------------------------------------------------------------------
    def export_openlineage(self, tenant: str, key: str | None = None, *, depth: int = 5) -> list[dict[str, Any]]:
        """OpenLineage run events (``COMPLETE``): one per run and one per deployment.

        With ``key``, only the runs and deployments within ``depth`` hops of it (either way);
        without, every one the tenant has. Each event's inputs are the nodes one hop upstream,
        its outputs the nodes one hop downstream.
        """
        if key is None:
            nodes = [n for kind in ("run", "deployment") for n in self._all_nodes(tenant, kind)]
        else:
            up, down = self.upstream(tenant, key, depth), self.downstream(tenant, key, depth)
            seen: dict[str, LineageNode] = {n.key: n for n in up.nodes + down.nodes}
            nodes = [n for n in seen.values() if n.kind in ("run", "deployment")]
        # Oldest first; within one millisecond a run before a deployment (which serves what runs made).
        nodes.sort(key=lambda n: (n.created_at, n.kind != "run", n.key))
        if not nodes:
            return []
        keys = [n.key for n in nodes]
        ins = self.store.lineage_edges(tenant, keys, direction="upstream")
        outs = self.store.lineage_edges(tenant, keys, direction="downstream")
        neighbours = self.store.get_lineage_nodes(tenant, [e.source for e in ins] + [e.target for e in outs])
        events = []
        for node in nodes:
            inputs = [neighbours[e.source] for e in ins if e.target == node.key and e.source in neighbours]
            outputs = [neighbours[e.target] for e in outs if e.source == node.key and e.target in neighbours]
            events.append(openlineage_event(tenant, node, inputs, outputs))
        return events

    def _all_nodes(self, tenant: str, kind: str) -> Iterator[LineageNode]:
        token = None
        while True:
            page = self.store.list_lineage_nodes(tenant, kind=kind, max_results=1000, page_token=token)
            yield from page.items
            token = page.next_token
            if not token:
                return


# ---- OpenLineage shapes ---------------------------------------------------------------------------
def _facet(schema: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema, **fields}


def _custom(facet: str, **fields: Any) -> dict[str, Any]:
    return _facet(f"{PRODUCER}/facets/{facet}.json", **fields)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _iso(ms: Any) -> str:
    """An event time (milliseconds) as ISO 8601, now when there is none. A stored time past what a calendar
    shows (kept before times were checked on the way in, or a node property) is shown as the last time it
    can be, and a property that is not a number as now, so one such row never breaks a listing."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms != ms or not ms:
        ms = now_ms()
    when = EPOCH + dt.timedelta(milliseconds=int(min(max(ms, 0), MAX_MS)))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def openlineage_namespace(tenant: str) -> str:
    return f"matih-lite/{tenant}"


def openlineage_run_id(tenant: str, node: LineageNode) -> str:
    """A UUID, as OpenLineage requires: the run id itself when it is one, else derived from the key."""
    if node.kind == "run":
        try:
            return str(uuid.UUID(node.key.partition(":")[2]))
        except ValueError:
            pass
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"matih-lite:{tenant}/{node.key}"))


def openlineage_dataset_of(tenant: str, node: LineageNode) -> dict[str, Any]:
    """A node as an OpenLineage dataset: namespace, name and facets."""
    facets: dict[str, Any] = {}
    if node.kind in DATA_KINDS:
        props = node.properties
        default_ns, default_name = openlineage_dataset(node.key.partition(":")[2])
        namespace = props.get("namespace") or default_ns
        name = props.get("name") or default_name
        if node.kind == "dataset" and "uri" not in props:
            namespace, name = default_ns, default_name
        if props.get("version"):
            facets["version"] = _facet(_FACET_SCHEMAS["version"], datasetVersion=str(props["version"]))
        if props.get("digest"):
            facets["matih_digest"] = _custom("DigestDatasetFacet", digest=str(props["digest"]))
    else:
        namespace, name = openlineage_namespace(tenant), node.key
    extra = {k: v for k, v in node.properties.items() if k not in ("namespace", "name", "uri", "version", "digest")}
    facets["matih_node"] = _custom("LineageNodeDatasetFacet", key=node.key, kind=node.kind,
                                   **({"properties": extra} if extra else {}))
    return {"namespace": namespace, "name": name, "facets": facets}


def openlineage_event(tenant: str, node: LineageNode, inputs: list[LineageNode],
                      outputs: list[LineageNode]) -> dict[str, Any]:
    """A ``COMPLETE`` RunEvent for a run (job: its experiment) or a deployment (job: the deployment)."""
    props = node.properties
    if node.kind == "run":
        job_name = str(props.get("experiment") or props.get("experiment_id") or node.key)
        when = props.get("end_time") or props.get("start_time") or node.updated_at
        run_facets = {"matih_run": _custom("RunFacet", run_id=node.key.partition(":")[2], name=node.name,
                                           status=props.get("status"))}
    else:
        job_name = node.key
        when = node.updated_at
        run_facets = {"matih_deployment": _custom("DeploymentRunFacet", deployment=node.name or node.key,
                                                  model=props.get("model"), version=props.get("version"))}
    return {
        "eventType": "COMPLETE",
        "eventTime": _iso(when),
        "run": {"runId": openlineage_run_id(tenant, node), "facets": run_facets},
        "job": {"namespace": openlineage_namespace(tenant), "name": job_name, "facets": {}},
        "inputs": [openlineage_dataset_of(tenant, n) for n in inputs],
        "outputs": [openlineage_dataset_of(tenant, n) for n in outputs],
        "producer": PRODUCER,
        "schemaURL": OPENLINEAGE_SCHEMA,
    }


# ---- run tags -------------------------------------------------------------------------------------
def dataset_refs(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The datasets a run's tags name, by tag name: ``[{"name": "train", "uri": ..., "version": ...}]``."""
    import json

    refs = []
    for key, value in sorted(tags.items()):
        if not key.startswith(DATASET_TAG) or len(key) == len(DATASET_TAG):
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        ref = dict(parsed) if isinstance(parsed, dict) else {"uri": value}
        ref["name"] = key[len(DATASET_TAG):]
        refs.append(ref)
    return refs


def _tag_name(text: str) -> str:
    """A dataset name usable in a tag key (letters, digits, ``_ - .``), at most 100 characters."""
    clean = re.sub(r"[^\w\-.]+", "_", text).strip("._") or "dataset"
    return clean[:100]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > MAX_KEY - 64:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {MAX_KEY - 64}")
    return value


def _opt_text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    return _text(str(value), what)


def _unique(edges: list[LineageEdge]) -> list[LineageEdge]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for e in edges:
        k = (e.source, e.target, e.kind)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


# ---- views (what the REST API and the clients show) ------------------------------------------------
class NodeView(msgspec.Struct):
    key: str
    kind: str
    name: str
    properties: dict[str, Any]
    created_at: int
    updated_at: int
    distance: int | None = None


class EdgeView(msgspec.Struct):
    source: str
    target: str
    kind: str
    created_at: int


class GraphView(msgspec.Struct):
    root: str
    direction: str
    depth: int
    truncated: bool
    nodes: list[NodeView]
    edges: list[EdgeView]


def node_view(node: LineageNode, distance: int | None = None) -> NodeView:
    return NodeView(node.key, node.kind, node.name, dict(node.properties), node.created_at, node.updated_at, distance)


def edge_view(edge: LineageEdge) -> EdgeView:
    return EdgeView(edge.source, edge.target, edge.kind, edge.created_at)


def graph_view(graph: LineageGraph) -> GraphView:
    return GraphView(graph.root, graph.direction, graph.depth, graph.truncated,
                     [node_view(n, graph.distances.get(n.key)) for n in graph.nodes],
                     [edge_view(e) for e in graph.edges])
