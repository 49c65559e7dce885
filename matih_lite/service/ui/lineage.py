"""Lineage: for any node, the graph upstream to its sources and downstream to its deployments.

The two walks of :class:`~matih_lite.lineage.Lineage` are laid out as columns by signed distance
(sources on the left, the node in the middle, what was built from it on the right) and drawn as
an inline SVG whose boxes link to the node's own lineage and to its page (run, model, deployment).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get
from litestar.params import FromQuery

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.service.ui.pages import Pages
from matih_lite.service.ui.render import page, seg, who

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 44, 60, 16, 12
KINDS = ("dataset", "table", "feature_view", "feature_service", "run", "model_version", "deployment")


def page_of(node_key: str) -> str | None:
    """The workbench page a lineage node stands for, if it has one."""
    prefix, _, rest = node_key.partition(":")
    if prefix == "run":
        return f"/ui/runs/{seg(rest)}"
    if prefix == "model":
        name, _, version = rest.rpartition("/")
        return f"/ui/models/{seg(name)}/versions/{seg(version)}" if version.isdigit() else None
    if prefix == "deployment":
        return f"/ui/deployments/{seg(rest)}"
    return None


def layout(root: str, up: Any, down: Any) -> dict[str, Any]:
    """Columns by signed distance, rows in each column, boxes and edges in SVG coordinates."""
    column: dict[str, int] = {root: 0}
    nodes: dict[str, Any] = {}
    for graph, sign in ((up, -1), (down, 1)):
        for n in graph.nodes:
            nodes[n.key] = n
            if n.key != root:
                d = sign * graph.distances.get(n.key, 1)
                # a node reached both ways (a cycle) stays where it was found first
                column.setdefault(n.key, d)
    edges = {(e.source, e.target, e.kind) for g in (up, down) for e in g.edges
             if e.source in column and e.target in column}
    lo, hi = min(column.values()), max(column.values())
    by_column: dict[int, list[str]] = {}
    for key, c in sorted(column.items(), key=lambda kv: (kv[1], nodes[kv[0]].kind, kv[0])):
        by_column.setdefault(c, []).append(key)
    rows = max(len(v) for v in by_column.values())
    boxes = {}
    for c, keys in by_column.items():
        offset = (rows - len(keys)) * (BOX_H + GAP_Y) / 2
        for i, key in enumerate(keys):
            x = PAD + (c - lo) * (BOX_W + GAP_X)
            y = PAD + offset + i * (BOX_H + GAP_Y)
            n = nodes[key]
            label = n.name or key.partition(":")[2]
            boxes[key] = {"key": key, "kind": n.kind, "x": x, "y": y, "label": label if len(label) <= 28 else
                          label[:27] + "…", "full": label, "root": key == root,
                          "lineage": f"/ui/lineage?key={quote(key, safe='')}", "page": page_of(key)}
    lines = []
    for source, target, kind in sorted(edges):
        a, b = boxes[source], boxes[target]
        x1, y1 = a["x"] + BOX_W, a["y"] + BOX_H / 2
        x2, y2 = b["x"], b["y"] + BOX_H / 2
        if x2 <= x1:  # an edge that goes back (a cycle): leave and enter from the sides it can
            x1, x2 = a["x"], b["x"] + BOX_W
        mid = (x1 + x2) / 2
        lines.append({"d": f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
                      "kind": kind, "source": source, "target": target})
    width = PAD * 2 + (hi - lo + 1) * BOX_W + (hi - lo) * GAP_X
    height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y
    return {"boxes": list(boxes.values()), "lines": lines, "width": width, "height": height, "box_w": BOX_W,
            "box_h": BOX_H, "truncated": up.truncated or down.truncated}


class LineagePages(Pages):
    path = "/ui"

    @get("/lineage", sync_to_thread=True)
    def lineage(self, request: Request, key: FromQuery[str] = "", kind: FromQuery[str] = "",
                depth: FromQuery[int] = 5) -> Response:
        from matih_lite.lineage import Lineage

        lineage = Lineage(request.app.state["host"])
        tenant = who(request).tenant
        if kind and kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", detail={"field": "kind"})
        nodes = lineage.list_nodes(tenant, kind=kind or None, max_results=1000).items
        graph = None
        missing = False
        if key:
            depth = max(0, min(depth, 10))
            try:
                graph = layout(key, lineage.upstream(tenant, key, depth), lineage.downstream(tenant, key, depth))
            except NotFound:
                missing = True  # a run that logged no inputs, a version registered before lineage: say so
        return page(request, "lineage.html", title="Lineage", section="lineage", key=key, kind=kind, kinds=KINDS,
                    nodes=nodes, graph=graph, depth=depth, node_page=page_of(key) if key else None, missing=missing)


CONTROLLERS = [LineagePages]
