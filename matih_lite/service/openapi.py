"""The OpenAPI document as the service behaves: every status an operation can answer, with the body it answers.

Litestar documents what a handler's signature shows: its success response, and a 400 with the shape of its
own ``ValidationException`` (``detail`` + ``status_code``), which is not what this service answers. The rest
follows from how the service works, and :func:`truthful_document` writes it into the generated document once,
for every operation, by the same rules:

- every error status answers RFC 9457 problem details (``application/problem+json``, one ``ProblemDetails``
  schema: :data:`~matih_lite.service.problems.PROBLEM_SCHEMA`);
- 400 where input is validated (parameters or a body), 404 where the path names something, 409 where a
  write can conflict with what is stored, 413 where a body is taken and 415 where it is read as JSON
  (:class:`~matih_lite.service.problems.BodyRequest`), 503 where a backend answers (it can be down);
- 401 and 403 on every route behind the bearer-token gate when auth is on (with the ``bearer`` scheme);
- what those rules cannot see, each operation's own: :data:`EXTRA_STATUSES` (a promotion's 422, the
  registry's four-eyes 403, a 404 for an id in a body), and the bodies of the routes that read their body
  themselves (:data:`RAW_BODIES`: the prediction fast paths, artifact uploads).

The request side says what the validation checks: :class:`StrictStructSchemaPlugin` closes the object of a
struct that refuses unknown fields (``additionalProperties: false``) and writes a struct's
``required_one_of`` (give at least one of these fields) as ``anyOf``, so a schema-valid request is never
refused for its shape. :func:`repair_options_allow` makes ``OPTIONS`` list every method of a path.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIType, Schema

from matih_lite.service.accounts import is_open
from matih_lite.service.problems import PROBLEM_JSON, PROBLEM_SCHEMA

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})

ERROR_DESCRIPTIONS = {
    400: "The input is invalid: a parameter or body field out of its range, a body that is not JSON or nests too "
         "deep, a value the domain refuses (the problem's detail says which, and how to fix it)",
    401: "No bearer token, or one that is unknown, expired or revoked (auth is on)",
    403: "The caller's roles do not allow this, or the domain's rule refuses it for this caller",
    404: "What the path (or the body) names does not exist in the caller's tenant",
    409: "The write conflicts with what is stored (a name taken, a finished run, a version in Production...)",
    413: "The request body is larger than the service accepts",
    415: "The body is sent as a media type other than JSON",
    422: "Refused by the model's governance policy; unmet lists each rule missed",
    500: "The model raised while predicting (title: Model error); counted in its variant's error rate",
    503: "A backend (metadata, artifacts, serving, events...) is unavailable; retry after Retry-After seconds",
}

NO_BACKEND = frozenset({
    ("get", "/health"), ("get", "/metrics"), ("get", "/ready"), ("get", "/v2"), ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"), ("get", "/api/v1/auth/whoami"), ("get", "/api/v1/drift/tests"),
    ("get", "/api/v1/drift/runner"),
})
"""Operations answered from the process alone (no backend call that could fail); /ready documents its own 503."""

READ_ONLY_WRITES = frozenset({
    ("post", "/api/v1/runs/search"), ("post", "/api/v1/deployments/{name}/predict"),
    ("post", "/v2/models/{name}/infer"), ("post", "/v2/models/{name}/versions/{version}/infer"),
    ("post", "/v2/repository/index"), ("post", "/api/v1/deployments/{name}/chat/completions"),
    ("post", "/api/v1/deployments/{name}/completions"), ("post", "/api/v1/features/online"),
    ("post", "/get-online-features"), ("post", "/api/v1/features/historical"), ("post", "/api/v1/features/plan"),
})
"""POSTs that store nothing, so cannot conflict with what is stored (no 409)."""

EXTRA_STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/api/v1/runs"): {404: "experiment_id or parent_run_id names no experiment or run"},
    ("post", "/api/v1/runs/search"): {404: "An experiment in experiment_names does not exist"},
    ("get", "/api/v1/lineage/node"): {404: "No node has this key"},
    ("get", "/api/v1/lineage/upstream"): {404: "No node has this key"},
    ("get", "/api/v1/lineage/downstream"): {404: "No node has this key"},
    ("get", "/api/v1/lineage/openlineage"): {404: "No node has this key"},
    ("post", "/api/v1/lineage/edges"): {404: "The source or target node does not exist"},
    ("post", "/api/v1/deployments"): {404: "The model, version, stage or alias to deploy does not exist"},
    ("post", "/api/v1/auth/tokens"): {404: "The user does not exist"},
    ("get", "/api/v1/runs/compare"): {404: "A run does not exist"},
    ("get", "/api/v1/approvals"): {404: "model names no registered model"},
    ("post", "/api/v1/models/{name}/versions/{version}/promote"): {422: ERROR_DESCRIPTIONS[422]},
    ("post", "/api/v1/approvals/{approval_id}/approve"): {
        403: "The caller requested this promotion (four eyes), or is not the model's owner or a lead",
        422: ERROR_DESCRIPTIONS[422]},
    ("post", "/api/v1/approvals/{approval_id}/reject"): {
        403: "The caller may not decide this model's promotions"},
    ("post", "/api/v1/models/{name}/rollback"): {403: "Rolling back takes one of the Production approvers"},
    ("patch", "/api/v1/models/{name}"): {403: "Only the model's owner, a lead or an admin hands a model over"},
    ("patch", "/api/v1/auth/users/{name}"): {403: "An admin cannot disable themselves or drop their own admin role"},
    ("delete", "/api/v1/auth/tokens/{token_id}"): {403: "The token is the one this request uses"},
    ("post", "/api/v1/deployments/{name}/predict"): {500: ERROR_DESCRIPTIONS[500]},
    ("post", "/v2/models/{name}/infer"): {500: ERROR_DESCRIPTIONS[500]},
    ("post", "/v2/models/{name}/versions/{version}/infer"): {500: ERROR_DESCRIPTIONS[500]},
}
"""Statuses of an operation that the rules of the module docstring cannot see, with why they happen."""

FEATURE_PATHS = ("/api/v1/features", "/get-online-features", "/materialize", "/materialize-incremental", "/push")
"""The feature store's routes (and the Feast-compatible ones): each answers 404 until definitions are applied."""
NO_FEATURES = "No feature definitions are applied yet ('matih-lite features apply'), or the name is unknown"

OIP_PREFIX = "/v2"
"""The Open Inference Protocol's routes: their errors are ``application/json`` (what protocol clients read), the
problem details with the protocol's ``error`` message beside them (:func:`matih_lite.service.oip.oip_problem`)."""
OIP_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "OipProblem",
    "description": "An Open Inference Protocol error: its `error` message, and the same error as problem details.",
    "allOf": [PROBLEM_REF, {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}],
}
OIP_PROBLEM_REF = {"$ref": "#/components/schemas/OipProblem"}


def _json_body(schema: dict[str, Any], *, required: bool = True, **more: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    content.update({media: {"schema": s} for media, s in more.items()})
    return {"required": required, "content": content}


SCORING_BODY = {
    "type": "object",
    "description": "MLflow's scoring JSON: exactly one of dataframe_split, dataframe_records, instances or inputs, "
                   "with params (the model's inference parameters) and request_key (a sticky route) beside it.",
    "properties": {
        "dataframe_split": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}}, "data": {"type": "array"},
            "index": {"type": "array"}}},
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {}, "inputs": {},
        "params": {"type": "object"},
        "request_key": {"type": "string", "minLength": 1, "maxLength": 1024},
    },
    "additionalProperties": False,
    "oneOf": [{"required": [k]} for k in ("dataframe_split", "dataframe_records", "instances", "inputs")],
}
INFER_BODY = {
    "type": "object",
    "description": "An Open Inference Protocol (v2) inference request; with the binary tensor extension the JSON "
                   "header is followed by the tensors' bytes (Inference-Header-Content-Length).",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                           "datatype": {"type": "string"}, "parameters": {"type": "object"}, "data": {}}}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                               "properties": {"name": {"type": "string"},
                                                              "parameters": {"type": "object"}}}},
    },
}
ONLINE_BODY = {"$ref": "#/components/schemas/OnlineIn"}


def _raw_bodies() -> dict[tuple[str, str], dict[str, Any]]:
    binary = {"type": "string", "format": "binary"}
    return {
        ("post", "/api/v1/deployments/{name}/predict"): _json_body(SCORING_BODY),
        ("post", "/v2/models/{name}/infer"): _json_body(INFER_BODY, **{"application/octet-stream": binary}),
        ("post", "/v2/models/{name}/versions/{version}/infer"): _json_body(
            INFER_BODY, **{"application/octet-stream": binary}),
        ("post", "/api/v1/features/online"): _json_body(ONLINE_BODY),
        ("post", "/get-online-features"): _json_body(ONLINE_BODY),
        ("post", "/api/v1/features/historical"): _json_body(
            {"$ref": "#/components/schemas/HistoricalIn"}, required=False,
            **{"application/vnd.apache.parquet": binary}),
        ("post", "/v2/repository/index"): _json_body(
            {"type": "object", "properties": {"ready": {"type": "boolean"}}}, required=False),
        ("put", "/api/v1/runs/{run_id}/artifacts/{path}"): {
            "required": False, "content": {"application/octet-stream": {"schema": binary}}},
        ("put", "/api/v1/environments"): {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
    }


RAW_BODIES = _raw_bodies()
"""Bodies of the routes that read their body themselves, so their signatures show none."""


def _raw_body_components() -> dict[str, Any]:
    from matih_lite.service.features import HistoricalIn, OnlineIn

    _, components = msgspec.json.schema_components([OnlineIn, HistoricalIn],
                                                   ref_template="#/components/schemas/{name}")
    return components


def _is_validation_exception(response: dict[str, Any]) -> bool:
    schema = (response.get("content") or {}).get("application/json", {}).get("schema", {})
    return isinstance(schema, dict) and "status_code" in (schema.get("required") or ())


def _path_params(op: dict[str, Any]) -> bool:
    return any(p.get("in") == "path" for p in op.get("parameters") or ())


def error_statuses(method: str, path: str, op: dict[str, Any], *, auth: bool, json_body: bool) -> dict[int, str]:
    """The error statuses ``method path`` can answer, each with why (the rules of the module docstring).
    ``json_body``: the route's body is decoded as JSON by the app's request class."""
    key = (method, path)
    body = op.get("requestBody") is not None or key in RAW_BODIES
    gated = auth and not is_open(path)
    found: dict[int, str] = {}
    if op.get("parameters") or body:
        found[400] = ERROR_DESCRIPTIONS[400]
    if gated:
        found[401] = ERROR_DESCRIPTIONS[401]
        found[403] = ERROR_DESCRIPTIONS[403]
    if _path_params(op):
        found[404] = ERROR_DESCRIPTIONS[404]
    if method in WRITE_METHODS and key not in READ_ONLY_WRITES:
        found[409] = ERROR_DESCRIPTIONS[409]
    if body:
        found[413] = ERROR_DESCRIPTIONS[413]
    if json_body:
        found[415] = ERROR_DESCRIPTIONS[415]
    if key not in NO_BACKEND or gated:
        found[503] = ERROR_DESCRIPTIONS[503]
    if path == FEATURE_PATHS[0] or path.startswith((f"{FEATURE_PATHS[0]}/", *FEATURE_PATHS[1:])):
        found[404] = NO_FEATURES
    found.update(EXTRA_STATUSES.get(key, {}))
    return dict(sorted(found.items()))


def problem_content(path: str) -> dict[str, Any]:
    """The media types (and schemas) an error of ``path`` is answered with."""
    content: dict[str, Any] = {PROBLEM_JSON: {"schema": dict(PROBLEM_REF)}}
    if path == OIP_PREFIX or path.startswith(f"{OIP_PREFIX}/"):
        content["application/json"] = {"schema": dict(OIP_PROBLEM_REF)}
    return content


def integer_bounds(node: Any) -> None:
    """Write the bounds of integer schemas as integers, in place: Litestar writes ``le=2**62`` as the float
    4.611686018427388e18, which is larger than the bound, so generated values past it looked valid."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    node[bound] = int(value)
        for value in node.values():
            integer_bounds(value)
    elif isinstance(node, list):
        for value in node:
            integer_bounds(value)


def truthful_document(raw: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    """The generated document ``raw`` (not changed) with every operation's error responses and raw bodies
    written in by the rules of the module docstring; ``auth``: whether the service requires bearer tokens."""
    doc = copy.deepcopy(raw)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("LLMProblem", None)  # the LLM routes' problems are ProblemDetails with OpenAI's error member
    schemas.pop("OpenAIError", None)
    schemas["ProblemDetails"] = copy.deepcopy(PROBLEM_SCHEMA)
    schemas["OipProblem"] = copy.deepcopy(OIP_PROBLEM_SCHEMA)
    for name, schema in _raw_body_components().items():
        schemas.setdefault(name, schema)
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "A token from POST /api/v1/auth/tokens (or 'matih-lite tokens create')"}}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete", "head", "options"):
                continue
            json_body = "application/json" in (op.get("requestBody") or {}).get("content", {})
            if (method, path) in RAW_BODIES:
                op["requestBody"] = copy.deepcopy(RAW_BODIES[(method, path)])
            responses = op.setdefault("responses", {})
            statuses = error_statuses(method, path, op, auth=auth, json_body=json_body)
            for status, why in statuses.items():
                given = responses.get(str(status))
                if given is not None and not _is_validation_exception(given) and \
                        PROBLEM_JSON not in (given.get("content") or {}):
                    continue  # a body of its own (``/ready``'s 503 is its readiness report)
                description = why if given is None or _is_validation_exception(given) else given["description"]
                responses[str(status)] = {"description": description, "content": problem_content(path)}
            if auth and not is_open(path):
                op["security"] = [{"bearer": []}]
    integer_bounds(doc)
    return doc


class TruthfulDocument:
    """Computes :func:`truthful_document` once per generated document, for every page that renders it."""

    def __init__(self, auth: bool) -> None:
        self.auth = auth
        self._source: dict[str, Any] | None = None
        self._document: dict[str, Any] | None = None

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The truthful document of ``raw`` (the generated document Litestar passes a render plugin)."""
        if self._document is None or self._source is not raw:
            self._document = truthful_document(raw, auth=self.auth)
            self._source = raw
        return self._document


class TruthfulJson(JsonRenderPlugin):
    """``/schema/openapi.json``: the truthful document."""

    def __init__(self, truth: TruthfulDocument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.truth = truth

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        """The document as JSON."""
        return super().render(request, self.truth(openapi_schema))


class TruthfulYaml(YamlRenderPlugin):
    """``/schema/openapi.yaml``: the truthful document."""

    def __init__(self, truth: TruthfulDocument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.truth = truth

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        """The document as YAML."""
        return super().render(request, self.truth(openapi_schema))


class TruthfulSwagger(SwaggerRenderPlugin):
    """``/schema``: Swagger UI over the truthful document."""

    def __init__(self, truth: TruthfulDocument, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.truth = truth

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        """The docs page, the document embedded."""
        return super().render(request, self.truth(openapi_schema))


# ---- the request side -----------------------------------------------------------------------------------------
class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's msgspec struct schemas, saying what msgspec checks: a struct with ``forbid_unknown_fields``
    is a closed object, and a struct's ``required_one_of`` (a ClassVar: tuples of field names, one of which
    must be given and not null) becomes ``anyOf``."""

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        """The struct's component schema, closed where msgspec refuses unknown fields."""
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        config = getattr(struct, "__struct_config__", None)
        if config is not None and config.forbid_unknown_fields:
            schema.additional_properties = False
        groups = getattr(struct, "required_one_of", None)
        if groups:
            not_null = Schema(schema_not=Schema(type=OpenAPIType.NULL))
            schema.any_of = [Schema(required=list(group), properties=dict.fromkeys(group, not_null))
                             for group in groups]
        return schema


def repair_options_allow(app: Any) -> None:
    """Make each path's automatic ``OPTIONS`` answer list all of the path's methods in ``Allow``.

    Litestar 2.25 creates that handler with the first route built for a path and keeps it when the route is
    rebuilt as more handlers of the path register, so its ``Allow`` names only the first handler's methods.
    The handler reads the methods of the route it closes over; pointing it at the final route fixes that.
    """
    from litestar.routes import HTTPRoute

    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        found = route.route_handler_map.get("OPTIONS")
        if found is None or found[0].fn.__name__ != "options_handler":
            continue
        for cell in found[0].fn.__closure__ or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route
