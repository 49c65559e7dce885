"""Training data from the feature store for a job.

A spec input ``NAME = { service = "churn_v1", entities = "labels.parquet" }`` (or ``features = [...]``).

When the job starts (before the compute backend sees it) the entity file is joined point in time with the
service's features, and the joined frame becomes an artifact of the job's run, ``inputs/NAME.parquet``; the
spec handed to the compute backend names that artifact (``runs:/RUN_ID/inputs/NAME.parquet``), so the
entrypoint reads it with ``matih_lite.training.input_path("NAME")`` on any backend, a cluster included.

The run records what it read: the joined frame as a dataset input (name, sha256 digest, schema, row count; the
``matih.dataset.NAME`` tag the registry copies into a version's training data), the feature service as the
``matih.feature_service`` tag (a version registered from the run keeps it, and a deployment of that version
looks its features up online by entity key), and the lineage source -> feature view -> feature service -> run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matih_lite.errors import InvalidInput, NotFound
from matih_lite.identity import Principal

if TYPE_CHECKING:
    from matih_lite.host import Host


FEATURE_SERVICE_TAG = "matih.feature_service"
"""Run and model-version tag: the feature service the model was trained on (and is served with)."""
FEATURES_TAG = "matih.features"
"""Run and model-version tag: the ``view:feature`` references, comma separated, of an input without a service."""
INPUT_FOLDER = "inputs"


def is_feature_input(value: Any) -> bool:
    """Whether a spec's input (as stored: plain JSON) is a feature-store input."""
    return isinstance(value, Mapping) and "entities" in value


def prepare_feature_inputs(host: Host, principal: Principal, run_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with each feature-store input replaced by the URI of its joined frame in the run (see the module
    docstring); a spec without one comes back unchanged. Raises InvalidInput naming the input at fault."""
    inputs = dict(spec.get("inputs") or {})
    wanted = {name: value for name, value in inputs.items() if is_feature_input(value)}
    if not wanted:
        return dict(spec)
    services: list[str] = []
    refs: list[str] = []
    for name, value in wanted.items():
        uri, used = _join_input(host, principal, run_id, spec, name, value)
        inputs[name] = uri
        if value.get("service"):
            services.append(str(value["service"]))
        else:
            refs.extend(used)
    from matih_lite.tracking import Tracking

    tags = {}
    if services:
        tags[FEATURE_SERVICE_TAG] = ",".join(dict.fromkeys(services))
    if refs:
        tags[FEATURES_TAG] = ",".join(dict.fromkeys(refs))[:5000]
    if tags:
        Tracking(host).log_batch(principal.tenant, run_id, tags=tags)
    return {**spec, "inputs": inputs}


def _join_input(host: Host, principal: Principal, run_id: str, spec: Mapping[str, Any], name: str,
                value: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Join one input into the run; returns its artifact URI and the feature references it holds."""
    from matih_lite.features.lineage import record_service
    from matih_lite.features.service import Features
    from matih_lite.lineage import Lineage
    from matih_lite.tracking import Tracking

    where = f"inputs.{name}"
    entities = Path(str(value["entities"]).removeprefix("file://"))
    if not entities.is_absolute():
        base = spec.get("base_dir")
        entities = (Path(base) if base else host.context.resolve(".")) / entities
    if not entities.is_file():
        raise InvalidInput(f"{where}.entities: {entities} does not exist (a parquet or CSV file of entity keys, "
                           "event times and labels)")
    service = value.get("service") or None
    features = list(value.get("features") or []) or None
    features_domain = Features.of(host)
    try:
        defs, res = features_domain.resolve(principal.tenant, features, service)
    except (InvalidInput, NotFound) as exc:  # the spec names them: a mistake in it, not a missing resource
        raise InvalidInput(f"{where}: {exc.message}", detail=exc.detail) from None
    timestamp = str(value.get("timestamp_column") or "event_timestamp")
    with tempfile.TemporaryDirectory(prefix="matih-feature-input-") as tmp:
        out = Path(tmp) / f"{name}.parquet"
        try:
            rows = features_domain.historical_to_file(principal, out, entity_path=entities, features=features,
                                                      service=service, timestamp_column=timestamp)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc.message}", detail=exc.detail) from None
        data = out.read_bytes()
        schema = _schema_of(out)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{INPUT_FOLDER}/{name}.parquet"
    Tracking(host).log_artifact(principal.tenant, run_id, rel, data)
    uri = f"runs:/{run_id}/{rel}"
    applied = features_domain.version(principal.tenant)
    _log_dataset(host, principal.tenant, run_id, name, digest, uri, entities, service, list(res.refs), schema, rows,
                 applied)
    lineage = Lineage(host)  # attached: the version registered from this run is linked to it, as in the service
    props = {"rows": rows, "entities": str(entities), "features": list(res.refs),
             **({"feature_service": service} if service else {})}
    lineage.log_input(principal.tenant, run_id, uri, digest=digest, name=name, properties=props)
    consumer = record_service(lineage, principal.tenant, defs, service, features)
    if consumer is not None:
        lineage.record_edge(principal.tenant, consumer, f"run:{run_id}", "consumed_by")
    else:
        from matih_lite.features.lineage import view_key

        for view in dict.fromkeys(r.partition(":")[0] for r in res.refs):
            lineage.record_edge(principal.tenant, view_key(view), f"run:{run_id}", "consumed_by")
    return uri, list(res.refs)


def _schema_of(path: Path) -> str:
    """MLflow's dataset schema JSON (``mlflow_colspec``) of a parquet file."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    cols = [{"name": f.name, "type": str(f.type)} for f in schema]
    return json.dumps({"mlflow_colspec": cols})


def _log_dataset(host: Host, tenant: str, run_id: str, name: str, digest: str, uri: str, entities: Path,
                 service: str | None, refs: list[str], schema: str, rows: int, applied: Any) -> None:
    """The run's inputs as MLflow's ``log_input`` keeps them (``mlflow.data.context = training``): the joined
    frame, and the feature service itself (its digest: the applied definitions' digest)."""
    from matih_lite.contracts.logged_models import DATASET_CONTEXT_TAG, Dataset, DatasetInput
    from matih_lite.tracking.logged_models import LoggedModels

    context = {DATASET_CONTEXT_TAG: "training"}
    source = json.dumps({"uri": uri, "entities": str(entities), "feature_service": service, "features": refs})
    profile = json.dumps({"num_rows": rows})
    datasets = [DatasetInput(Dataset(name, digest, "feature_store", source, schema, profile), context)]
    if service:
        definition = json.dumps({"feature_service": service, "features": refs,
                                 "definitions_version": applied.version})
        datasets.append(DatasetInput(Dataset(service, applied.digest, "feature_service", definition), context))
    LoggedModels(host).log_run_io(tenant, run_id, datasets=datasets)
