"""matih-ray: training and tuning jobs on an existing Ray cluster (``compute = { backend = "ray" }``).

Jobs go through the Ray Jobs API (:mod:`matih_ray.jobs_api`); the backend is
:class:`matih_ray.plugin.RayBackend`, registered through the ``matih_lite`` entry point.
``matih-kuberay`` submits through the same API to the clusters KubeRay makes.
"""

from matih_ray.jobs_api import JobsApi
from matih_ray.plugin import RayBackend, RaySettings, submission_for

__all__ = ["JobsApi", "RayBackend", "RaySettings", "submission_for"]
__version__ = "0.1.0"
