"""One request's view for the MLflow routes: its tenant, and MLflow's experiment "0".

MLflow's default experiment "0" is the tenant's experiment named "Default", created the first
time a client names it; every answer shows that experiment's id as "0".
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from matih_lite.contracts import Run
from matih_lite.contracts.logged_models import LoggedModel
from matih_lite.errors import NotFound
from matih_lite.identity import LOCAL_ADMIN, Principal
from matih_lite.service.mlflow.api import required
from matih_lite.tracking import LoggedModels, Tracking
from matih_lite.tracking.traces import Traces

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"


class Scope:
    """One request's tenant, with the "0" <-> Default mapping looked up at most once."""

    _UNSET: Any = object()

    def __init__(self, tracking: Tracking, principal: Principal) -> None:
        self.tracking = tracking
        self.principal = principal
        self.tenant = principal.tenant
        self._default: Any = self._UNSET

    @cached_property
    def models(self) -> LoggedModels:
        """The tracking domain's logged models (and run inputs/outputs), made on first use."""
        return LoggedModels(self.tracking.host)

    @cached_property
    def traces(self) -> Traces:
        """The tracking domain's traces, made on first use."""
        return Traces(self.tracking.host)

    def acting_user(self, run_id: str | None) -> str:
        """Who acts: the authenticated user, or, on a service without auth, the user of the run the
        request builds on (the client's ``mlflow.user``) when there is one."""
        if self.principal != LOCAL_ADMIN or not run_id:
            return self.principal.user
        try:
            return self.tracking.get_run(self.tenant, str(run_id)).user_id or self.principal.user
        except NotFound:
            return self.principal.user

    # -- experiment ids
    def default_id(self, *, create: bool) -> str | None:
        """The stored id of the tenant's Default experiment (made when ``create``), or None."""
        if self._default is self._UNSET or (self._default is None and create):
            if create:
                self._default = self.tracking.get_or_create_experiment(self.tenant,
                                                                       DEFAULT_EXPERIMENT_NAME).experiment_id
            else:
                try:
                    self._default = self.tracking.get_experiment_by_name(self.tenant,
                                                                         DEFAULT_EXPERIMENT_NAME).experiment_id
                except NotFound:
                    self._default = None
        return self._default

    def internal(self, experiment_id: Any, *, create: bool = True) -> str:
        """The stored id for an id a client sent ("0" is the Default experiment)."""
        eid = str(required(experiment_id, "experiment_id"))
        if eid == DEFAULT_EXPERIMENT_ID:
            found = self.default_id(create=create)
            if found is None:
                raise NotFound(f"experiment {eid!r} does not exist")
            return found
        return eid

    def external(self, experiment_id: str) -> str:
        """The id a client sees for a stored one."""
        return DEFAULT_EXPERIMENT_ID if experiment_id == self.default_id(create=False) else experiment_id

    # -- runs and logged models
    def run(self, run_id: Any) -> Run:
        """The tenant's run, or NotFound."""
        return self.tracking.get_run(self.tenant, str(required(run_id, "run_id")))

    def model(self, model_id: Any, *, allow_deleted: bool = False) -> LoggedModel:
        """The tenant's logged model, or NotFound (also when deleted, unless ``allow_deleted``)."""
        return self.models.get(self.tenant, required(model_id, "model_id"), allow_deleted=allow_deleted)


def scope(tracking: Tracking, principal: Principal) -> Scope:
    """The view of one request."""
    return Scope(tracking, principal)
