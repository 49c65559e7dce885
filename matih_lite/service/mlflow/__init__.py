"""MLflow-compatible REST: the unchanged ``mlflow`` client (3.x) logs, registers and promotes into matih-lite.

Served under ``/api/2.0/mlflow/`` (and ``/ajax-api/2.0/mlflow/``, as MLflow's own UI calls it):

- :mod:`.experiments` and :mod:`.runs`: experiments, runs, metrics, params, tags, batches, inputs
  and outputs, metric history;
- :mod:`.logged_models`: the logged models that MLflow 3's ``log_model`` creates;
- :mod:`.artifacts`: the proxied artifacts under ``/api/2.0/mlflow-artifacts/``;
- :mod:`.registry`: registered models, versions, stages (governed) and aliases;
- :mod:`.traces`: MLflow 3's traces (and MLflow 2's fallbacks), their search, tags and assessments;
- :mod:`.server`: MLflow 3's server-info and version probes and ENDPOINT_NOT_FOUND for everything else;

with the REST conventions (paths, errors, protobuf JSON) in :mod:`.api`, the search filters of
experiments, logged models and the registry in :mod:`.filters`, and a request's tenant (MLflow's
experiment "0" is its "Default") in :mod:`.scope`. Every rule stays in the domains
(:class:`~matih_lite.tracking.Tracking`, :class:`~matih_lite.tracking.LoggedModels`,
:class:`~matih_lite.tracking.traces.Traces`, :class:`~matih_lite.registry.Registry`); these modules only translate.
"""

from matih_lite.service.mlflow.artifacts import MlflowArtifacts
from matih_lite.service.mlflow.experiments import MlflowExperiments
from matih_lite.service.mlflow.logged_models import MlflowLoggedModels
from matih_lite.service.mlflow.registry import MlflowModelVersions, MlflowRegisteredModels
from matih_lite.service.mlflow.runs import MlflowMetrics, MlflowRuns
from matih_lite.service.mlflow.server import MlflowServerInfo
from matih_lite.service.mlflow.traces import MlflowTraces

CONTROLLERS = [MlflowExperiments, MlflowRuns, MlflowMetrics, MlflowLoggedModels, MlflowArtifacts, MlflowServerInfo,
               MlflowRegisteredModels, MlflowModelVersions, MlflowTraces]
"""Every MLflow-compatible controller, for the app's ``DOMAIN_CONTROLLERS``."""
