"""Shared by the serving tests: a model saved with a flavor, logged to a run and registered."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.registry import Registry
from matih_lite.serving import flavor as flavor_of
from matih_lite.tracking import Tracking


def register_model(host: Any, name: str, model: Any, flavor: str = "pyfunc", example: Any = None, *,
                   principal: Principal = LOCAL_ADMIN, experiment: str = "serving-tests",
                   stage: str | None = "Staging") -> Any:
    """Save ``model`` with ``flavor`` (``example`` as its input example), log the folder to a new run of
    ``principal``'s tenant under ``model/``, register it as the next version of ``name`` and promote it to
    ``stage`` (Staging: a version may take live traffic from there on; None leaves it in Development)."""
    tracking = Tracking(host)
    tenant = principal.tenant
    run = tracking.create_run(tenant, tracking.get_or_create_experiment(tenant, experiment).experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        flavor_of(host, flavor).save(model, tmp, input_example=example)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                tracking.log_artifact(tenant, run.run_id, f"model/{f.relative_to(tmp).as_posix()}", f.read_bytes())
    registry = Registry(host)
    version = registry.register_version(principal, name, run_id=run.run_id, path="model", flavor=flavor)
    if stage is None:
        return version
    registry.promote(principal, name, version.version, stage, reason="serving tests")
    return registry.get_version(principal, name, version.version)
