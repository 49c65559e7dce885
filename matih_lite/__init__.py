"""matih-lite: the MATIH machine-learning platform as one Python package.

``import matih_lite as ml`` is cheap: the SDK functions (``ml.start_run``, ``ml.log_metric``,
...) load on first use, and heavy libraries (Ray, MLflow, scikit-learn) only inside the
code that needs them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_SDK_NAMES = frozenset({
    "start_run", "end_run", "active_run", "log_param", "log_params", "log_metric", "log_metrics", "set_tag",
    "set_tags", "log_artifact", "log_artifacts", "log_dict", "log_text", "log_figure", "set_experiment",
    "seed_everything", "autolog", "Client", "get_client", "flush", "log_input",
})


def __getattr__(name: str) -> Any:
    """The SDK's functions, imported on first use and then kept here, so a call in a loop is a plain lookup."""
    if name in _SDK_NAMES:
        from matih_lite import sdk

        value = getattr(sdk, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'matih_lite' has no attribute {name!r}")
