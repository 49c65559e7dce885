"""matih-kuberay: training and tuning jobs on Kubernetes through KubeRay (``compute = { backend = "kuberay" }``).

:mod:`matih_kuberay.manifests` renders a job's objects (RayJob or RayCluster, its tenant's Namespace and
ResourceQuota), :mod:`matih_kuberay.validation` checks them without a cluster, and
:class:`matih_kuberay.plugin.KubeRayBackend` applies and follows them, submitting the job itself through
its cluster's Ray Jobs API (``matih-ray``).
"""

from matih_kuberay.settings import KubeRaySettings

__all__ = ["KubeRaySettings"]
__version__ = "0.1.0"
