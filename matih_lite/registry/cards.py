"""Model cards: what a version is for, what it was trained on, how well and how fairly it performs.

A card is assembled when asked for, from what the platform already knows, and rendered as
JSON, Markdown or self-contained HTML:

- the version (registry): stage, aliases, flavor, signature, source, owner, description;
- free text people write: ``intended_use``, ``limitations``, ``ethical_considerations``
  (kept in a JSON artifact per version, referenced by the version tag ``matih.card.text``;
  the description is the version's own registry description);
- training data: the version's dataset references (run tags, see ``ml.log_input``) merged with
  the dataset nodes of its lineage (digests, date ranges, row counts, quality scores);
- performance and fairness: the latest evaluation (:meth:`ModelCards.evaluate`, stored as a JSON
  artifact referenced by the version tag ``matih.card.evaluation``), with bootstrap intervals;
- the training run's own metrics and params;
- deployment history: every move into or out of Production and every rollback, from the
  registry's audit log, and the deployments lineage knows;
- lineage upstream and downstream of the version.

Models are loaded for evaluation only from the registry's own artifacts (``mlflow-artifacts:/``
locations), and pickles only for the ``sklearn`` flavor.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.clock import now_ms
from matih_lite.errors import InvalidInput, NotFound
from matih_lite.events import PlatformEvent
from matih_lite.identity import Principal
from matih_lite.remote import HostOrService

if TYPE_CHECKING:
    from matih_lite.host import Host


CARD_SCHEMA = "matih-lite/model-card/v1"
EVALUATION_SCHEMA = "matih-lite/evaluation/v1"
TEXT_TAG = "matih.card.text"
EVALUATION_TAG = "matih.card.evaluation"
TEXT_FIELDS = ("intended_use", "limitations", "ethical_considerations")
"""Free-text card fields kept beside the version; ``description`` is the version's own."""
EDITABLE = ("description", *TEXT_FIELDS)
MAX_TEXT = 65_536
MAX_ROWS = 1_000_000
FORMATS = ("json", "md", "html")
_ARTIFACT_PREFIX = "mlflow-artifacts:/"
_PICKLE_FLAVORS = ("sklearn", "")


class ModelCards:
    """Cards and evaluations of model versions for one platform (a :class:`~matih_lite.host.Host`)."""

    def __init__(self, host: Host) -> None:
        from matih_lite.registry import Registry

        self.host = host
        self.registry = Registry(host)

    @property
    def artifacts(self) -> Any:
        return self.host.artifacts

    # ---- the card -------------------------------------------------------------------------------
    def card(self, principal: Principal, name: str, version: int | str, *, lineage_depth: int = 3) -> dict[str, Any]:
        """The card of a version as a JSON-ready dict. Raises NotFound for the model or version."""
        from matih_lite.lineage import Lineage, model_key
        from matih_lite.lineage.service import graph_view

        tenant = principal.tenant
        mv = self.registry.get_version(principal, name, version)
        model = self.registry.get_model(principal, name)
        text = self._text(tenant, mv)
        run = self._run(tenant, mv.run_id)
        lineage = Lineage(self.host)
        node = model_key(mv.name, mv.version)
        upstream = _safe(lambda: lineage.upstream(tenant, node, lineage_depth))
        downstream = _safe(lambda: lineage.downstream(tenant, node, lineage_depth))
        return {
            "schema": CARD_SCHEMA,
            "generated_at": now_ms(),
            "model": {
                "name": mv.name, "version": mv.version, "stage": mv.stage, "aliases": list(mv.aliases),
                "owner": model.owner, "flavor": mv.flavor, "source": mv.source, "run_id": mv.run_id,
                "created_by": mv.created_by, "creation_time": mv.creation_time,
                "last_update_time": mv.last_update_time, "model_description": model.description,
                "tags": {k: v for k, v in mv.tags.items() if not k.startswith("matih.card.")},
                "signature": mv.signature,
            },
            "description": mv.description,
            **{f: text.get(f, "") for f in TEXT_FIELDS},
            "text_updated": {"at": text.get("updated_at"), "by": text.get("updated_by")} if text else None,
            "training_data": self._training_data(mv, upstream),
            "training_run": run,
            "evaluation": self.evaluation(principal, name, mv.version, mv=mv),
            "deployment_history": self._deployment_history(principal, mv, downstream),
            "lineage": {
                "upstream": msgspec.to_builtins(graph_view(upstream)) if upstream else None,
                "downstream": msgspec.to_builtins(graph_view(downstream)) if downstream else None,
            },
        }

    def render(self, principal: Principal, name: str, version: int | str, fmt: str = "json") -> str:
        """The card as ``json``, ``md`` (Markdown) or ``html`` (one self-contained page) text."""
        if fmt not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        card = self.card(principal, name, version)
        if fmt == "json":
            return json.dumps(card, indent=2, allow_nan=False) + "\n"
        return render_markdown(card) if fmt == "md" else render_html(card)

    # ---- free text --------------------------------------------------------------------------------
    def edit(self, principal: Principal, name: str, version: int | str, **fields: Any) -> dict[str, Any]:
        """Set free-text fields (``description``, ``intended_use``, ``limitations``,
        ``ethical_considerations``); ``None`` leaves one as it is, ``""`` clears it. Returns the card."""
        unknown = sorted(set(fields) - set(EDITABLE))
        if unknown:
            raise InvalidInput(f"cannot edit {', '.join(unknown)}; editable card fields: {', '.join(EDITABLE)}")
        for key, value in fields.items():
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise InvalidInput(f"{key} must be text of at most {MAX_TEXT} characters")
        mv = self.registry.get_version(principal, name, version)
        if fields.get("description") is not None:
            self.registry.update_version(principal, name, mv.version, description=fields["description"])
        changes = {k: fields[k] for k in TEXT_FIELDS if fields.get(k) is not None}
        if changes:
            text = self._text(principal.tenant, mv)
            text.update(changes)
            text.update({"updated_at": now_ms(), "updated_by": principal.user})
            rel = self._reference(mv, TEXT_TAG) or f"_cards/{_segment(name)}/v{mv.version}/card.json"
            self.artifacts.put(f"{principal.tenant}/{rel}", json.dumps(text, indent=2).encode())
            if mv.tags.get(TEXT_TAG) != rel:
                self.registry.update_version(principal, name, mv.version, tags={TEXT_TAG: rel})
        if any(v is not None for v in fields.values()):
            self.host.emit(PlatformEvent("model.card.edited", f"{name}/{mv.version}", principal.tenant,
                                         {"name": name, "version": mv.version, "actor": principal.user,
                                          "fields": sorted(k for k, v in fields.items() if v is not None)}))
        return self.card(principal, name, mv.version)

    def _text(self, tenant: str, mv: Any) -> dict[str, Any]:
        rel = self._reference(mv, TEXT_TAG)
        if not rel:
            return {}
        try:
            doc = json.loads(self.artifacts.get(f"{tenant}/{rel}"))
        except (NotFound, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    @staticmethod
    def _reference(mv: Any, tag: str) -> str | None:
        """An artifact a version tag points at, confined to the tenant's ``_cards/`` folder."""
        rel = mv.tags.get(tag)
        if not rel:
            return None
        try:
            rel = clean_path(rel)
        except InvalidInput:
            return None
        return rel if rel.startswith("_cards/") else None

    # ---- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, principal: Principal, name: str, version: int | str, X: Any, y: Any, *,
                 protected: Mapping[str, Any] | Sequence[str] | None = None, positive_label: Any = None,
                 task: str | None = None, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 dataset: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Load the version's model, predict ``X``, and store metrics with bootstrap intervals and fairness.

        ``protected`` names attributes: a mapping name -> one group per row, or names of columns of
        ``X`` (a DataFrame). ``dataset`` describes the evaluation set (``{"name", "uri"}``) for
        the card. Returns the stored evaluation; the card shows the latest one.
        """
        from matih_lite.registry.evaluation import data_digest, evaluate_predictions

        mv = self.registry.get_version(principal, name, version)
        groups = _protected(X, protected)
        model = self.load_model(principal, mv)
        n = _rows(X)
        if n > MAX_ROWS:
            raise InvalidInput(f"evaluation sets are limited to {MAX_ROWS} rows; got {n} (sample them)")
        pred, scores, positive, guessed = _predict(model, X, positive_label)
        result = evaluate_predictions(y, pred, scores=scores, task=task or guessed, positive_label=positive,
                                      protected=groups, n_resamples=n_resamples, seed=seed, confidence=confidence)
        when = now_ms()
        doc = {
            "schema": EVALUATION_SCHEMA, "model": mv.name, "version": mv.version,
            "evaluated_at": when, "evaluated_by": principal.user,
            "dataset": {**{k: str(v) for k, v in (dataset or {}).items() if k in ("name", "uri", "version")},
                        "n_samples": n, "digest": data_digest(_as_array(X), y, *groups.values())},
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            **result,
        }
        rel = f"_cards/{_segment(name)}/v{mv.version}/evaluation-{when}.json"
        self.artifacts.put(f"{principal.tenant}/{rel}", json.dumps(doc, indent=2, allow_nan=False).encode())
        self.registry.update_version(principal, name, mv.version, tags={EVALUATION_TAG: rel})
        summary = {k: v["value"] for k, v in result["metrics"].items()}
        self.host.emit(PlatformEvent("model.version.evaluated", f"{name}/{mv.version}", principal.tenant,
                                     {"name": name, "version": mv.version, "metrics": summary,
                                      "n_samples": n, "artifact": rel}))
        return doc

    def evaluation(self, principal: Principal, name: str, version: int | str, *,
                   mv: Any = None) -> dict[str, Any] | None:
        """The latest stored evaluation of a version, or None."""
        mv = mv or self.registry.get_version(principal, name, version)
        rel = self._reference(mv, EVALUATION_TAG)
        if not rel:
            return None
        try:
            doc = json.loads(self.artifacts.get(f"{principal.tenant}/{rel}"))
        except (NotFound, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("schema") == EVALUATION_SCHEMA else None

    def load_model(self, principal: Principal, mv: Any) -> Any:
        """The version's model, from the registry's artifacts, through its flavor.

        A flavor contributed by a plugin (``register_flavors``) loads from a local copy of the
        files; the built-in path unpickles ``model.pkl`` (MLflow's sklearn layout, as the
        autologger writes it) for the ``sklearn`` flavor only.
        """
        location = mv.storage_location or ""
        if not location.startswith(_ARTIFACT_PREFIX):
            raise InvalidInput(f"version {mv.version} of {mv.name!r} lives at {location or mv.source!r}, outside the "
                               "registry's artifacts; models are loaded only from there (register it from a run)")
        root = clean_path(f"{principal.tenant}/{location[len(_ARTIFACT_PREFIX):].strip('/')}")
        files = {i.path[len(root) + 1:]: i for i in self.artifacts.list(root, recursive=True) if not i.is_dir}
        flavors = self.host.registry("register_flavors")
        if mv.flavor and mv.flavor in flavors and hasattr(flavors[mv.flavor], "load"):
            return self._load_with_flavor(flavors[mv.flavor], root, files)
        if mv.flavor not in _PICKLE_FLAVORS:
            raise InvalidInput(f"cannot load flavor {mv.flavor!r} for evaluation: matih-lite loads sklearn models; "
                               f"install a plugin that registers the {mv.flavor!r} flavor")
        if not files:  # the location is the pickle itself
            return pickle.loads(self.artifacts.get(root))
        pickled = "model.pkl"
        if "MLmodel" in files:
            pickled = _pickled_model_path(self.artifacts.get(f"{root}/MLmodel").decode("utf-8", "replace")) or pickled
        if pickled not in files:
            raise NotFound(f"version {mv.version} of {mv.name!r} has no {pickled} among its files "
                           f"({', '.join(sorted(files)[:5]) or 'none'})")
        return pickle.loads(self.artifacts.get(f"{root}/{pickled}"))

    def _load_with_flavor(self, flavor: Any, root: str, files: Mapping[str, Any]) -> Any:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            for rel in files:
                target = Path(tmp, clean_path(rel))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.artifacts.get(f"{root}/{rel}"))
            return flavor.load(tmp)

    # ---- sections -------------------------------------------------------------------------------------
    def _run(self, tenant: str, run_id: str | None) -> dict[str, Any] | None:
        if not run_id:
            return None
        try:
            run = self.registry.tracking.get_run(tenant, run_id)
        except NotFound:
            return {"run_id": run_id, "missing": True}
        return {"run_id": run.run_id, "name": run.name, "experiment_id": run.experiment_id, "status": run.status,
                "start_time": run.start_time, "end_time": run.end_time, "user_id": run.user_id,
                "params": dict(run.params), "metrics": {k: _finite(m.value) for k, m in sorted(run.metrics.items())}}

    @staticmethod
    def _training_data(mv: Any, upstream: Any) -> list[dict[str, Any]]:
        """The version's dataset references, completed by the dataset nodes upstream of it."""
        refs: list[dict[str, Any]] = [dict(r) for r in mv.training_data]
        nodes = [n for n in (upstream.nodes if upstream else []) if n.kind in ("dataset", "table", "feature_view")]
        for node in nodes:
            props = dict(node.properties)
            uri = props.get("uri") or node.key.partition(":")[2]
            match = next((r for r in refs if r.get("uri") == uri and str(r.get("version") or "") ==
                          str(props.get("version") or "")), None)
            if match is None:
                match = next((r for r in refs if r.get("uri") == uri and not r.get("version")), None)
            if match is None:
                match = {"name": node.name or uri.rstrip("/").rsplit("/", 1)[-1], "uri": uri}
                refs.append(match)
            for k, v in props.items():
                if k not in ("namespace", "name") and v not in (None, ""):
                    match.setdefault(k, v)
            match.setdefault("kind", node.kind)
            match["lineage_key"] = node.key
        for ref in refs:
            start = ref.get("start_date") or ref.get("start")
            end = ref.get("end_date") or ref.get("end")
            if (start or end) and "date_range" not in ref:
                ref["date_range"] = {"start": start, "end": end}
            quality = ref.get("quality_score", ref.get("quality"))
            if quality is not None:
                ref["quality_score"] = quality
        return refs

    def _deployment_history(self, principal: Principal, mv: Any, downstream: Any) -> dict[str, Any]:
        """Moves into and out of Production and rollbacks (the whole model's), and known deployments."""
        events = []
        token = None
        while True:
            page = self.registry.audit_log(principal, mv.name, max_results=1000, page_token=token)
            for e in page.items:
                production = "Production" in (e.to_stage, e.from_stage)
                if e.action == "model.rolled_back" or (e.action == "version.transitioned" and production) or \
                        e.action in ("approval.approved", "approval.rejected", "approval.requested"):
                    self_approved = bool((e.detail or {}).get("self_approved"))
                    events.append({"timestamp": e.timestamp, "action": e.action, "version": e.version,
                                   "from_stage": e.from_stage, "to_stage": e.to_stage, "actor": e.actor,
                                   "reason": e.reason, "this_version": e.version == mv.version,
                                   "self_approved": self_approved})
            token = page.next_token
            if not token:
                break
        deployments = [{"deployment": n.name or n.key.partition(":")[2], "key": n.key,
                        "properties": dict(n.properties)}
                       for n in (downstream.nodes if downstream else []) if n.kind == "deployment"]
        rollbacks = sum(1 for e in events if e["action"] == "model.rolled_back")
        return {"events": events, "rollbacks": rollbacks, "deployments": deployments}


# ---- inputs ---------------------------------------------------------------------------------------
def _rows(X: Any) -> int:
    if hasattr(X, "shape"):
        return int(X.shape[0])
    return len(X)


def _as_array(X: Any) -> Any:
    return X.to_numpy() if hasattr(X, "to_numpy") else X


def _protected(X: Any, protected: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Protected attributes as name -> one group per row (column names are read from ``X``)."""
    if protected is None:
        return {}
    if isinstance(protected, str):
        protected = [protected]
    if isinstance(protected, Mapping):
        return {str(k): v for k, v in protected.items()}
    out = {}
    for column in protected:
        if not hasattr(X, "columns") or column not in X.columns:
            raise InvalidInput(f"protected attribute {column!r} is not a column of the evaluation data; pass "
                               "a DataFrame with it, or protected={name: values}")
        out[str(column)] = X[column]
    return out


def _predict(model: Any, X: Any, positive_label: Any) -> tuple[Any, Any, Any, str | None]:
    """(predictions, scores, positive label, task) for a fitted model."""
    import numpy as np

    if not hasattr(model, "predict"):
        raise InvalidInput(f"the loaded model ({type(model).__name__}) has no predict()")
    wanted = getattr(model, "feature_names_in_", None)
    if wanted is not None and hasattr(X, "columns"):
        missing = [c for c in wanted if c not in X.columns]
        if missing:
            raise InvalidInput(f"the evaluation data lacks feature {missing[0]!r} the model was trained on")
        X = X[list(wanted)]  # extra columns (protected attributes kept beside the features) are not inputs
    try:
        pred = np.asarray(model.predict(X))
    except (ValueError, TypeError, KeyError) as exc:  # the data does not fit the model's inputs
        raise InvalidInput(f"the model cannot predict on this evaluation data: {type(exc).__name__}: {exc}; "
                           "give the features it was trained on (protected attributes may be passed "
                           "separately as protected={name: values})") from None
    estimator_type = getattr(model, "_estimator_type", None)
    try:
        from sklearn.base import is_classifier, is_regressor

        task = "classification" if is_classifier(model) else "regression" if is_regressor(model) else None
    except Exception:  # not a scikit-learn estimator
        task = {"classifier": "classification", "regressor": "regression"}.get(estimator_type or "")
    if task == "regression":
        return pred, None, None, task
    classes = list(getattr(model, "classes_", []))
    scores = None
    positive = positive_label
    if len(classes) == 2 and positive is None:
        positive = classes[1]
    if hasattr(model, "predict_proba") and classes:
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        if positive is not None:
            match = [i for i, c in enumerate(classes) if c == positive or str(c) == str(positive)]
            scores = proba[:, match[0]] if match else None
        else:
            scores = proba
    elif hasattr(model, "decision_function") and len(classes) == 2 and positive == classes[1]:
        scores = np.asarray(model.decision_function(X), dtype=np.float64)
    return pred, scores, positive, task


def _pickled_model_path(mlmodel: str) -> str | None:
    """``pickled_model`` (sklearn flavor) or ``model_path`` (python_function) from an MLmodel file."""
    for line in mlmodel.splitlines():
        key, _, value = line.strip().partition(":")
        if key in ("pickled_model", "model_path") and value.strip().endswith((".pkl", ".pickle")):
            return value.strip()
    return None


def _segment(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:200] or "model"


def _finite(x: float) -> float | None:
    return None if x != x or x in (float("inf"), float("-inf")) else x


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except NotFound:
        return None


# ---- rendering --------------------------------------------------------------------------------------
def _when(ms: Any) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 1e5 else f"{x:.4g}"
    return str(x)


def _ci(m: Mapping[str, Any] | None) -> str:
    if not m or m.get("ci_low") is None:
        return "n/a"
    return f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell or a heading."""
    return str(text if text is not None else "").replace("\\", "\\\\").replace("|", "\\|").replace(
        "\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _free(text: str, field: str, card: Mapping[str, Any]) -> str:
    if text:
        return text.replace("<", "&lt;").replace(">", "&gt;")
    m = card["model"]
    flag = field.replace("_", "-")
    return f"_Not written yet: `matih-lite models card-edit {m['name']} {m['version']} --{flag} \"...\"`._"


def _dates(ref: Mapping[str, Any]) -> str:
    r = ref.get("date_range")
    if not r:
        return ""
    return f"{r.get('start') or '…'} – {r.get('end') or '…'}"


SECTIONS_METRIC_ORDER = ("accuracy", "precision", "recall", "f1", "roc_auc", "mse", "rmse", "mae", "r2")
GROUP_METRICS = ("accuracy", "precision", "recall", "f1", "selection_rate", "true_positive_rate",
                 "false_positive_rate", "mse", "mae", "r2")


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown (free text is the authors' Markdown, with raw HTML neutralised)."""
    m = card["model"]
    out = [f"# Model card: {_md(m['name'])} v{m['version']}", ""]
    facts = [f"stage **{_md(m['stage'])}**"]
    if m["aliases"]:
        facts.append("aliases " + ", ".join(f"`{_md(a)}`" for a in m["aliases"]))
    facts += [f"flavor `{_md(m['flavor'] or 'unknown')}`", f"owner {_md(m['owner'] or 'n/a')}",
              f"registered {_when(m['creation_time'])} by {_md(m['created_by'] or 'n/a')}"]
    if m["run_id"]:
        facts.append(f"run `{_md(m['run_id'])}`")
    out += ["> " + " · ".join(facts), "", f"Source: `{_md(m['source'])}`", ""]
    out += ["## Description", "", _free(card["description"], "description", card), ""]
    out += ["## Intended use", "", _free(card["intended_use"], "intended_use", card), ""]

    out += ["## Training data", ""]
    if card["training_data"]:
        out += ["| name | uri | version | digest | date range | rows | quality |", "|---|---|---|---|---|---|---|"]
        for r in card["training_data"]:
            out.append(f"| {_md(r.get('name', ''))} | {_md(r.get('uri', ''))} | {_md(r.get('version', ''))} | "
                       f"{_md(r.get('digest', ''))} | {_md(_dates(r))} | {_md(r.get('rows', ''))} | "
                       f"{_md(r.get('quality_score', ''))} |")
    else:
        out.append("_No dataset references: log them in the training run with `ml.log_input(uri, version=..., "
                   "digest=...)`._")
    out.append("")

    ev = card["evaluation"]
    out += ["## Performance", ""]
    if ev:
        b = ev["bootstrap"]
        pct = f"{100 * b['confidence']:g}%"
        ds = ev["dataset"]
        label = f"{_md(ds.get('name'))} " if ds.get("name") else ""
        out += [f"Evaluated on {label}{ds['n_samples']} rows (`{_md(ds['digest'][:23])}…`) on "
                f"{_when(ev['evaluated_at'])} by {_md(ev['evaluated_by'])}. {pct} confidence intervals: "
                f"{b['method']} bootstrap, {b['n_resamples']} resamples, seed {b['seed']}."
                + (f" Positive label: `{_md(ev['positive_label'])}`." if ev.get("positive_label") is not None
                   else ""), "",
                f"| metric | value | {pct} CI |", "|---|---|---|"]
        for k in SECTIONS_METRIC_ORDER:
            if k in ev["metrics"]:
                e = ev["metrics"][k]
                out.append(f"| {k} | {_fmt(e['value'])} | {_ci(e)} |")
        out.append("")
        out += ["## Fairness", ""]
        if ev["fairness"]:
            for attr, f in ev["fairness"].items():
                out += [f"### {_md(attr)}", ""]
                for k in ("demographic_parity_difference", "equalized_odds_difference"):
                    if k in f:
                        out.append(f"- {k.replace('_', ' ')}: **{_fmt(f[k]['value'])}** ({pct} CI {_ci(f[k])})")
                if f.get("note"):
                    out.append(f"- _{_md(f['note'])}_")
                cols = [c for c in GROUP_METRICS if any(c in g["metrics"] for g in f["groups"].values())]
                out += ["", "| group | n | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
                        "|---|---|" + "---|" * len(cols)]
                for g, entry in f["groups"].items():
                    cells = [f"{_fmt(entry['metrics'][c]['value'])} {_ci(entry['metrics'][c])}"
                             if c in entry["metrics"] else "" for c in cols]
                    out.append(f"| {_md(g)} | {entry['count']} | " + " | ".join(cells) + " |")
                out.append("")
        else:
            out += ["_No protected attributes were given with the evaluation._", ""]
    else:
        out += [f"_Not evaluated yet: `POST /api/v1/models/{_md(m['name'])}/versions/{m['version']}/evaluate` or "
                f"`matih-lite models evaluate {_md(m['name'])} {m['version']} --data eval.csv --target y`._", ""]

    run = card["training_run"]
    if run and not run.get("missing"):
        out += ["## Training run", "", f"Run `{_md(run['run_id'])}` ({_md(run['name'])}), {run['status']}, "
                f"started {_when(run['start_time'])}.", ""]
        if run["metrics"]:
            out += ["| metric | value |", "|---|---|"]
            out += [f"| {_md(k)} | {_fmt(v)} |" for k, v in run["metrics"].items()]
            out.append("")
        if run["params"]:
            out += ["| param | value |", "|---|---|"] + [f"| {_md(k)} | {_md(v)} |"
                                                       for k, v in sorted(run["params"].items())]
            out.append("")

    out += ["## Limitations", "", _free(card["limitations"], "limitations", card), ""]
    out += ["## Ethical considerations", "", _free(card["ethical_considerations"], "ethical_considerations", card),
            ""]

    hist = card["deployment_history"]
    out += ["## Deployment history", ""]
    if hist["events"]:
        out += [f"{hist['rollbacks']} rollback(s).", "", "| when | action | version | from | to | by | reason |",
                "|---|---|---|---|---|---|---|"]
        for e in hist["events"]:
            mark = "**" if e["this_version"] else ""
            action = e["action"] + (" (self-approved, auth off)" if e["self_approved"] else "")
            out.append(f"| {_when(e['timestamp'])} | {_md(action)} | {mark}{e['version'] or ''}{mark} | "
                       f"{_md(e['from_stage'] or '')} | {_md(e['to_stage'] or '')} | {_md(e['actor'])} | "
                       f"{_md(e['reason'])} |")
    else:
        out.append("_Never in Production._")
    if hist["deployments"]:
        out += ["", "Deployments: " + ", ".join(f"`{_md(d['deployment'])}`" for d in hist["deployments"])]
    out.append("")

    out += ["## Lineage", ""]
    for direction in ("upstream", "downstream"):
        graph = card["lineage"][direction]
        nodes = [n for n in (graph or {}).get("nodes", []) if n["distance"]]
        out.append(f"- {direction}: " + (", ".join(f"`{_md(n['key'])}` ({n['kind']})" for n in nodes) or "nothing "
                                         "recorded"))
    out += ["", f"<sub>Generated {_when(card['generated_at'])} by matih-lite ({CARD_SCHEMA}).</sub>", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;
color:#1f2328;line-height:1.5}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
.facts{color:#57606a}.facts b{color:#1f2328}code{background:#f6f8fa;padding:0 .25rem;border-radius:4px}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}.free{white-space:pre-wrap}.missing{color:#8c959f;
font-style:italic}.ci{color:#57606a;font-size:.85em}.bar{position:relative;width:140px;height:10px;background:#eaeef2;
border-radius:5px;display:inline-block;vertical-align:middle;margin-left:.4rem}.bar span{position:absolute;top:0;
height:10px;background:#8fb8ff;border-radius:5px}.bar i{position:absolute;top:-2px;width:2px;height:14px;
background:#0969da}.this{background:#fff8c5}footer{margin-top:2rem;color:#8c959f;font-size:.8rem}
"""


def _h(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _bar(e: Mapping[str, Any]) -> str:
    """The interval as a bar on [0, 1] with the estimate marked (only for metrics in that range)."""
    v, lo, hi = e.get("value"), e.get("ci_low"), e.get("ci_high")
    if v is None or lo is None or hi is None or not (0 <= lo <= hi <= 1 and 0 <= v <= 1):
        return ""
    return (f'<span class="bar" title="{_h(_ci(e))}"><span style="left:{100 * lo:.1f}%;width:'
            f'{max(100 * (hi - lo), 0.5):.1f}%"></span><i style="left:{100 * v:.1f}%"></i></span>')


def _html_free(text: str, field: str, card: Mapping[str, Any]) -> str:
    if text:
        return f'<div class="free">{_h(text)}</div>'
    m = card["model"]
    return (f'<p class="missing">Not written yet: <code>matih-lite models card-edit {_h(m["name"])} {m["version"]} '
            f'--{field.replace("_", "-")} "..."</code></p>')


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], row_class: Sequence[str] | None = None) -> str:
    """Cells arrive escaped (they may hold markup we made)."""
    out = ["<table><thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(card: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML page: inline CSS, no scripts, every value escaped."""
    m = card["model"]
    title = f"Model card: {m['name']} v{m['version']}"
    parts = [f"<h1>{_h(title)}</h1>",
             f'<p class="facts">stage <b>{_h(m["stage"])}</b>'
             + (" · aliases " + ", ".join(f"<code>{_h(a)}</code>" for a in m["aliases"]) if m["aliases"] else "")
             + f' · flavor <code>{_h(m["flavor"] or "unknown")}</code> · owner {_h(m["owner"] or "n/a")}'
             f' · registered {_h(_when(m["creation_time"]))} by {_h(m["created_by"] or "n/a")}'
             + (f' · run <code>{_h(m["run_id"])}</code>' if m["run_id"] else "")
             + f'<br>source <code>{_h(m["source"])}</code></p>']
    parts += ["<h2>Description</h2>", _html_free(card["description"], "description", card)]
    parts += ["<h2>Intended use</h2>", _html_free(card["intended_use"], "intended_use", card)]

    parts.append("<h2>Training data</h2>")
    if card["training_data"]:
        parts.append(_table(["name", "uri", "version", "digest", "date range", "rows", "quality"], [
            [_h(r.get("name")), f"<code>{_h(r.get('uri'))}</code>", _h(r.get("version", "")), _h(r.get("digest", "")),
             _h(_dates(r)), _h(r.get("rows", "")), _h(r.get("quality_score", ""))] for r in card["training_data"]]))
    else:
        parts.append('<p class="missing">No dataset references: log them in the training run with '
                     "<code>ml.log_input(uri, version=..., digest=...)</code>.</p>")

    ev = card["evaluation"]
    parts.append("<h2>Performance</h2>")
    if ev:
        b, ds = ev["bootstrap"], ev["dataset"]
        pct = f"{100 * b['confidence']:g}%"
        parts.append(f"<p>Evaluated on {_h(ds.get('name', ''))} {ds['n_samples']} rows (<code>{_h(ds['digest'][:23])}"
                     f"…</code>) on {_h(_when(ev['evaluated_at']))} by {_h(ev['evaluated_by'])}. {pct} confidence "
                     f"intervals: {_h(b['method'])} bootstrap, {b['n_resamples']} resamples, seed {b['seed']}."
                     + (f" Positive label: <code>{_h(ev['positive_label'])}</code>."
                        if ev.get("positive_label") is not None else "") + "</p>")
        parts.append(_table(["metric", "value", f"{pct} CI"], [
            [_h(k), _h(_fmt(ev["metrics"][k]["value"])) + _bar(ev["metrics"][k]),
             f'<span class="ci">{_h(_ci(ev["metrics"][k]))}</span>']
            for k in SECTIONS_METRIC_ORDER if k in ev["metrics"]]))
        parts.append("<h2>Fairness</h2>")
        if ev["fairness"]:
            for attr, f in ev["fairness"].items():
                parts.append(f"<h3>{_h(attr)}</h3><ul>")
                for k in ("demographic_parity_difference", "equalized_odds_difference"):
                    if k in f:
                        parts.append(f"<li>{_h(k.replace('_', ' '))}: <b>{_h(_fmt(f[k]['value']))}</b> "
                                     f'<span class="ci">{pct} CI {_h(_ci(f[k]))}</span></li>')
                if f.get("note"):
                    parts.append(f'<li class="missing">{_h(f["note"])}</li>')
                parts.append("</ul>")
                cols = [c for c in GROUP_METRICS if any(c in g["metrics"] for g in f["groups"].values())]
                parts.append(_table(["group", "n", *[c.replace("_", " ") for c in cols]], [
                    [_h(g), _h(entry["count"]), *[
                        (_h(_fmt(entry["metrics"][c]["value"])) + f'<br><span class="ci">{_h(_ci(entry["metrics"][c]))}'
                         "</span>") if c in entry["metrics"] else "" for c in cols]]
                    for g, entry in f["groups"].items()]))
        else:
            parts.append('<p class="missing">No protected attributes were given with the evaluation.</p>')
    else:
        parts.append(f'<p class="missing">Not evaluated yet: <code>POST /api/v1/models/{_h(m["name"])}/versions/'
                     f'{m["version"]}/evaluate</code>.</p>')

    run = card["training_run"]
    if run and not run.get("missing"):
        parts.append(f"<h2>Training run</h2><p>Run <code>{_h(run['run_id'])}</code> ({_h(run['name'])}), "
                     f"{_h(run['status'])}, started {_h(_when(run['start_time']))}.</p>")
        if run["metrics"]:
            parts.append(_table(["metric", "value"], [[_h(k), _h(_fmt(v))] for k, v in run["metrics"].items()]))
        if run["params"]:
            parts.append(_table(["param", "value"], [[_h(k), _h(v)] for k, v in sorted(run["params"].items())]))

    parts += ["<h2>Limitations</h2>", _html_free(card["limitations"], "limitations", card)]
    parts += ["<h2>Ethical considerations</h2>",
              _html_free(card["ethical_considerations"], "ethical_considerations", card)]

    hist = card["deployment_history"]
    parts.append("<h2>Deployment history</h2>")
    if hist["events"]:
        parts.append(f"<p>{hist['rollbacks']} rollback(s).</p>")
        parts.append(_table(["when", "action", "version", "from", "to", "by", "reason"], [
            [_h(_when(e["timestamp"])), _h(e["action"] + (" (self-approved, auth off)" if e["self_approved"] else "")),
             _h(e["version"] or ""), _h(e["from_stage"] or ""),
             _h(e["to_stage"] or ""), _h(e["actor"]), _h(e["reason"])] for e in hist["events"]],
            ["this" if e["this_version"] else "" for e in hist["events"]]))
    else:
        parts.append('<p class="missing">Never in Production.</p>')
    if hist["deployments"]:
        parts.append("<p>Deployments: " + ", ".join(f"<code>{_h(d['deployment'])}</code>"
                                                   for d in hist["deployments"]) + "</p>")

    parts.append("<h2>Lineage</h2><ul>")
    for direction in ("upstream", "downstream"):
        graph = card["lineage"][direction]
        nodes = [n for n in (graph or {}).get("nodes", []) if n["distance"]]
        parts.append(f"<li>{direction}: " + (", ".join(f"<code>{_h(n['key'])}</code> ({_h(n['kind'])})"
                                                       for n in nodes) or "nothing recorded") + "</li>")
    parts.append("</ul>")
    parts.append(f"<footer>Generated {_h(_when(card['generated_at']))} by matih-lite ({_h(CARD_SCHEMA)}).</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


# ---- the client (embedded or HTTP), for the CLI and scripts -------------------------------------------
class CardClient(HostOrService):
    """Cards over this folder's store or the ml-service at ``MATIH_URL``, like the tracking client.

    Embedded, it acts as ``principal`` (the local admin unless told otherwise); over HTTP the
    token names the caller.
    """

    @staticmethod
    def _path(name: str, version: int | str, leaf: str) -> str:
        from urllib.parse import quote

        return f"/api/v1/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}/{leaf}"

    def card(self, name: str, version: int | str, fmt: str = "json") -> str:
        """The card as text in ``fmt`` (json, md, html)."""
        if self.http is None:
            return ModelCards(self.host).render(self.principal, name, version, fmt)
        if fmt not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        resp = self.http.send("GET", self._path(name, version, "card"), params={"format": fmt})
        return resp.text if fmt != "json" else json.dumps(resp.json(), indent=2) + "\n"

    def edit(self, name: str, version: int | str, **fields: Any) -> dict[str, Any]:
        if self.http is None:
            return ModelCards(self.host).edit(self.principal, name, version, **fields)
        body = {k: v for k, v in fields.items() if v is not None}
        return self.http.call("PATCH", self._path(name, version, "card"), json=body)

    def evaluate(self, name: str, version: int | str, X: Any, y: Any, **options: Any) -> dict[str, Any]:
        """Evaluate (see :meth:`ModelCards.evaluate`); over HTTP, ``X`` travels as a table."""
        if self.http is None:
            return ModelCards(self.host).evaluate(self.principal, name, version, X, y, **options)
        body = {"X": table_json(X), "y": _plain_list(y), **{k: v for k, v in options.items() if v is not None}}
        if isinstance(body.get("protected"), Mapping):
            body["protected"] = {k: _plain_list(v) for k, v in body["protected"].items()}
        elif isinstance(body.get("protected"), str):
            body["protected"] = [body["protected"]]
        return self.http.call("POST", self._path(name, version, "evaluate"), json=body)


def _plain_list(values: Any) -> list[Any]:
    if hasattr(values, "tolist"):
        return values.tolist()
    if hasattr(values, "to_numpy"):
        return values.to_numpy().tolist()
    return [v.item() if hasattr(v, "item") else v for v in values]


def table_json(X: Any) -> Any:
    """A feature table as JSON: ``{"columns": [...], "data": [[...]]}`` for a DataFrame, else rows."""
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        return {"columns": [str(c) for c in X.columns], "data": X.to_numpy().tolist()}
    return _plain_list(X)


def table_from_json(X: Any) -> Any:
    """The inverse of :func:`table_json` (also a dict of columns, or a list of row objects). InvalidInput for
    a table that is not one: ragged rows, columns of different lengths, cells that are not values."""
    if not isinstance(X, (Mapping, list)) or not X:
        raise InvalidInput("X must be rows (a list of lists), {\"columns\": [...], \"data\": [[...]]} or columns")
    try:
        return _table_from_json(X)
    except (ValueError, TypeError, AttributeError) as exc:  # pandas' and numpy's words for "not a table"
        raise InvalidInput(f"X is not a table: {exc}", detail={"field": "X"}) from None


def _table_from_json(X: Any) -> Any:
    import numpy as np

    if isinstance(X, Mapping) and "columns" in X and "data" in X:
        import pandas as pd

        return pd.DataFrame(X["data"], columns=X["columns"])
    if isinstance(X, Mapping) or (isinstance(X, list) and isinstance(X[0], Mapping)):
        import pandas as pd

        if isinstance(X, list) and not all(isinstance(row, Mapping) for row in X):
            raise InvalidInput("X mixes row objects with other rows; give every row as an object, or none",
                               detail={"field": "X"})
        return pd.DataFrame(X)
    return np.asarray(X)


def read_table(data: bytes, name: str) -> Any:
    """A CSV or Parquet file's bytes as a DataFrame (the CLI's ``--data``)."""
    import pandas as pd

    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data))
