"""A registration source for tests that need a model version but never load it: a run of the principal's tenant
with a placeholder file under ``model/`` (a version's source is always a run, logged model or artifact of its
tenant; see :meth:`matih_lite.registry.service.Registry.resolve_source`)."""

from __future__ import annotations

from typing import Any


def placeholder_source(host: Any, principal: Any, experiment: str = "placeholder-models") -> str:
    """``runs:/RUN_ID/model`` of a new run of ``principal``'s tenant holding one file that is not a real model."""
    from matih_lite.tracking import Tracking

    tracking = Tracking(host)
    tenant = principal.tenant
    run = tracking.create_run(tenant, tracking.get_or_create_experiment(tenant, experiment).experiment_id)
    tracking.log_artifact(tenant, run.run_id, "model/README.txt", b"a placeholder: this version is never loaded")
    return f"runs:/{run.run_id}/model"
