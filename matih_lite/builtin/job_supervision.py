"""Built-in: when the ml-service stops, the jobs it supervises end CANCELLED at once, saying why.

Without this they would run on until the compute backend went away with the process and be
reported lost half a minute later (:data:`matih_lite.training.jobs.STALE_AFTER_S`). Queued jobs
stay queued: the next service (or any process that submits jobs) picks them up.
"""

from __future__ import annotations

from typing import Any

from matih_lite.hookspecs import hookimpl


@hookimpl
def shutdown(host: Any) -> None:
    import sys

    module = sys.modules.get("matih_lite.training.jobs")
    if module is None:  # no job was touched in this process: nothing to cancel, nothing to import
        return
    module.JobSupervisor.shutdown_for(host, "the ml-service supervising it stopped")
