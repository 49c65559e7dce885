"""MLflow 3's logged models, and what runs consumed and produced, written once over the metadata slot.

A logged model (``m-`` and 32 hex digits) belongs to an experiment; its files live in the
artifacts slot at ``{tenant}/{experiment_id}/models/{model_id}/artifacts``, the place its
``artifact_uri`` (``mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts``) names. Its
record (status, tags, write-once params, metric points) and every run's inputs and outputs are
the metadata slot's (:class:`~matih_lite.contracts.logged_models.LoggedModelStore`), so service
replicas on one database never lose each other's changes.

Folders written before that kept this state as JSON in the artifacts slot
(``{tenant}/_mlflow/models/{model_id}.json`` and ``{tenant}/_mlflow/runs/{run_id}/io.json``).
The first call for a tenant moves those documents into the metadata slot and deletes each file
once its record is stored; a document that cannot be moved (not JSON, its experiment or run
gone) stays where it is, with a warning in the log.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from matih_lite.contracts.clock import now_ms
from matih_lite.contracts.logged_models import (
    LOGGED_MODEL_STATUSES,
    Dataset,
    DatasetInput,
    LoggedModel,
    LoggedModelMetric,
    ModelOutput,
    RunIO,
)
from matih_lite.errors import Conflict, InvalidInput, NotFound
from matih_lite.tracking.names import random_run_name
from matih_lite.tracking.service import MAX_PARAM_VALUE, MAX_TAG_VALUE, Tracking, check_key, check_value

if TYPE_CHECKING:
    from matih_lite.host import Host


log = logging.getLogger("matih_lite.tracking.logged_models")

MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
BAD_NAME_CHARACTERS = ("/", ":", ".", "%", '"', "'")
LEGACY_FOLDER = "_mlflow"
"""Under a tenant's folder in the artifacts slot: the JSON state of folders from before the metadata slot kept it."""

_moved: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_moving = threading.Lock()


class LoggedModels:
    """Logged models and run inputs/outputs for one platform (a :class:`~matih_lite.host.Host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.tracking = Tracking(host)

    @property
    def store(self) -> Any:
        """The metadata slot."""
        return self.host.metadata

    @property
    def artifacts(self) -> Any:
        """The artifacts slot (the models' files, and the JSON state of old folders)."""
        return self.host.artifacts

    # ---- logged models ------------------------------------------------------------------------------
    def create(self, tenant: str, experiment_id: str, *, name: str | None = None, model_type: str | None = None,
               source_run_id: str | None = None, creator: str = "", tags: Mapping[str, str] | None = None,
               params: Mapping[str, str] | None = None) -> LoggedModel:
        """A new logged model, PENDING, in an active experiment of the tenant (and of its run, when named)."""
        self._move_legacy(tenant)
        exp = self.tracking.get_experiment(tenant, experiment_id)
        if exp.lifecycle_stage != "active":
            raise InvalidInput(f"The experiment {experiment_id} must be in the 'active' state. "
                               f"Current state is {exp.lifecycle_stage}.")
        if name is not None and (not name or any(c in name for c in BAD_NAME_CHARACTERS)):
            raise InvalidInput(f"Invalid model name ({name!r}) provided. Model name must be a non-empty string "
                               f"and cannot contain the following characters: {BAD_NAME_CHARACTERS}")
        if source_run_id:
            self.tracking.get_run(tenant, source_run_id)  # a run of this tenant, or NotFound
        model_id = f"m-{uuid.uuid4().hex}"
        return self.store.create_logged_model(LoggedModel(
            model_id=model_id, tenant=tenant, experiment_id=exp.experiment_id, name=name or random_run_name(),
            artifact_uri=f"mlflow-artifacts:/{exp.experiment_id}/models/{model_id}/artifacts",
            model_type=model_type or None, source_run_id=source_run_id or None, creator=creator,
            tags=_checked(tags, "tag", MAX_TAG_VALUE), params=_checked(params, "param", MAX_PARAM_VALUE)))

    def get(self, tenant: str, model_id: Any, *, allow_deleted: bool = False) -> LoggedModel:
        """Raises NotFound (for an id that is not a logged model's too)."""
        self._move_legacy(tenant)
        return self.store.get_logged_model(tenant, _model_id(model_id), allow_deleted=allow_deleted)

    def search(self, tenant: str, experiment_ids: Sequence[str], *, source_run_id: str | None = None,
               name: str | None = None, lifecycle: str = "active") -> list[LoggedModel]:
        """Every logged model of the experiments (the tenant's), newest first."""
        self._move_legacy(tenant)
        found: list[LoggedModel] = []
        token = None
        while True:
            page = self.store.search_logged_models(tenant, [str(e) for e in experiment_ids],
                                                   source_run_id=source_run_id, name=name, lifecycle=lifecycle,
                                                   max_results=1000, page_token=token)
            found += page.items
            token = page.next_token
            if not token:
                return found

    def of_run(self, tenant: str, run_id: str, name: str) -> LoggedModel | None:
        """The newest active model named ``name`` that run ``run_id`` logged, if any (``runs:/RUN/NAME``)."""
        run = self.tracking.get_run(tenant, run_id)
        found = self.search(tenant, [run.experiment_id], source_run_id=run_id, name=name)
        return found[0] if found else None

    def finalize(self, tenant: str, model_id: str, status: str) -> LoggedModel:
        """Set the status (READY once its files are up, or UPLOAD_FAILED). Raises InvalidInput, NotFound."""
        if status not in LOGGED_MODEL_STATUSES:
            raise InvalidInput(f"invalid logged model status {status!r}; use one of {', '.join(LOGGED_MODEL_STATUSES)}")
        self._move_legacy(tenant)
        return self.store.update_logged_model(tenant, _model_id(model_id), status=status)

    def delete(self, tenant: str, model_id: str) -> LoggedModel:
        """Hide the model (its files stay). Raises NotFound."""
        self._move_legacy(tenant)
        return self.store.update_logged_model(tenant, _model_id(model_id), lifecycle_stage="deleted")

    def set_tags(self, tenant: str, model_id: str, tags: Mapping[str, str]) -> None:
        """Upsert tags (checked as run tags are). Raises InvalidInput, NotFound."""
        self._move_legacy(tenant)
        self.store.set_logged_model_tags(tenant, _model_id(model_id), _checked(tags, "tag", MAX_TAG_VALUE))

    def delete_tag(self, tenant: str, model_id: str, key: str) -> None:
        """Raises NotFound for the model or the tag."""
        self._move_legacy(tenant)
        self.store.delete_logged_model_tag(tenant, _model_id(model_id), key)

    def log_params(self, tenant: str, model_id: str, params: Mapping[str, str]) -> None:
        """Params are write-once: the same value again is fine, another one is refused (Conflict)."""
        self._move_legacy(tenant)
        self.store.log_logged_model_params(tenant, _model_id(model_id), _checked(params, "param", MAX_PARAM_VALUE))

    def log_metrics(self, tenant: str, model_id: str, points: Sequence[LoggedModelMetric]) -> None:
        """Append points; a point sent again (same key, timestamp, step and run) is kept once."""
        self._move_legacy(tenant)
        self.store.log_logged_model_metrics(tenant, _model_id(model_id), points)

    def files_root(self, model: LoggedModel) -> str:
        """Where the model's files are in the artifacts slot."""
        return f"{model.tenant}/{model.experiment_id}/models/{model.model_id}/artifacts"

    # ---- run inputs and outputs -----------------------------------------------------------------------
    def run_io(self, tenant: str, run_id: str) -> RunIO:
        """What the run consumed and produced. Raises NotFound."""
        self._move_legacy(tenant)
        return self.store.get_run_io(tenant, run_id)

    def log_run_io(self, tenant: str, run_id: str, *, datasets: Sequence[DatasetInput] = (),
                   model_inputs: Sequence[str] = (), model_outputs: Sequence[ModelOutput] = ()) -> None:
        """Add what a run consumed and produced; each kept once. Raises NotFound for the run."""
        self._move_legacy(tenant)
        if datasets or model_inputs or model_outputs:
            self.store.log_run_io(tenant, run_id, datasets=datasets, model_inputs=model_inputs,
                                  model_outputs=model_outputs)

    # ---- folders from before --------------------------------------------------------------------------
    def _move_legacy(self, tenant: str) -> None:
        """Move the tenant's JSON documents from the artifacts slot into the metadata slot, once per process."""
        artifacts = self.artifacts
        try:
            done = _moved.setdefault(artifacts, set())
        except TypeError:  # a store that takes no weak reference: look every time (a listing of a folder)
            done = set()
        if tenant in done:
            return
        with _moving:
            if tenant in done:
                return
            folder = f"{tenant}/{LEGACY_FOLDER}"
            try:
                files = [f.path for f in artifacts.list(folder, recursive=True) if not f.is_dir]
            except (NotFound, InvalidInput):
                files = []
            kept = 0
            for path in files:
                kept += 0 if self._move_document(tenant, path) else 1
            if files and not kept:
                artifacts.delete(folder)
            if files:
                log.info("moved %d MLflow documents of tenant %s into the metadata slot (%d left in %s)",
                         len(files) - kept, tenant, kept, folder)
            done.add(tenant)

    def _move_document(self, tenant: str, path: str) -> bool:
        """One legacy document into the store, then its file deleted; False (logged) when it has to stay."""
        try:
            doc = json.loads(self.artifacts.get(path))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            parts = path.split("/")
            if parts[-2:-1] == ["models"] and parts[-1].endswith(".json"):
                self._move_model(tenant, doc)
            elif parts[-1] == "io.json" and len(parts) >= 4 and parts[-3] == "runs":
                self._move_run_io(tenant, parts[-2], doc)
            else:
                log.warning("%s: not an MLflow document matih-lite wrote; left where it is", path)
                return False
        except (ValueError, KeyError, TypeError, NotFound, InvalidInput) as exc:
            log.warning("%s could not be moved into the metadata slot (%s); left where it is", path, exc)
            return False
        self.artifacts.delete(path)
        return True

    def _move_model(self, tenant: str, doc: dict[str, Any]) -> None:
        model = LoggedModel(
            model_id=_model_id(doc["model_id"]), tenant=tenant, experiment_id=str(doc["experiment_id"]),
            name=doc["name"], artifact_uri=doc.get("artifact_uri") or "", status=doc.get("status") or
            "LOGGED_MODEL_PENDING", status_message=doc.get("status_message"), model_type=doc.get("model_type"),
            source_run_id=doc.get("source_run_id"), creator=doc.get("creator") or "",
            lifecycle_stage=doc.get("lifecycle_stage") or "active",
            creation_time=int(doc.get("creation_timestamp_ms") or now_ms()),
            last_update_time=int(doc.get("last_updated_timestamp_ms") or doc.get("creation_timestamp_ms") or now_ms()),
            tags=dict(doc.get("tags") or {}), params=dict(doc.get("params") or {}),
            metrics=[LoggedModelMetric(str(p["key"]), float(p["value"]), int(p["timestamp"]), int(p.get("step") or 0),
                                       p.get("run_id"), p.get("dataset_name"), p.get("dataset_digest"))
                     for p in doc.get("metrics") or []])
        try:
            self.store.create_logged_model(model)
        except Conflict:
            pass  # moved before (the file's delete did not happen), or by another process just now

    def _move_run_io(self, tenant: str, run_id: str, doc: dict[str, Any]) -> None:
        datasets = [DatasetInput(Dataset(**d["dataset"]), {t["key"]: t.get("value") or "" for t in d.get("tags", [])})
                    for d in doc.get("dataset_inputs") or []]
        self.store.log_run_io(tenant, run_id, datasets=datasets,
                              model_inputs=[m["model_id"] for m in doc.get("model_inputs") or []],
                              model_outputs=[ModelOutput(o["model_id"], int(o.get("step") or 0))
                                             for o in doc.get("model_outputs") or []])


def _model_id(model_id: Any) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
        raise NotFound(f"logged model {model_id!r} does not exist")
    return model_id


def _checked(items: Mapping[str, str] | Iterable[tuple[str, str]] | None, what: str, limit: int) -> dict[str, str]:
    pairs = items.items() if isinstance(items, Mapping) else (items or ())
    return {check_key(k, what): check_value(v, limit, what, k) for k, v in pairs}
