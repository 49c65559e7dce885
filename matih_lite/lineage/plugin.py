"""Built-in: platform events become lineage edges (run -> model version -> deployment).

The ml-service calls ``startup(host)``; this plugin then attaches a
:class:`~matih_lite.lineage.recorder.LineageRecorder` to that host's own plugin manager, so
the host's events reach a recorder that knows which store to write to (see
:mod:`matih_lite.lineage.recorder` for why the host is not kept here). Embedded code gets the
same recorder from :class:`~matih_lite.lineage.Lineage`. Block this plugin to stop recording.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matih_lite.hookspecs import hookimpl

if TYPE_CHECKING:
    from matih_lite.host import Host



@hookimpl
def startup(host: Host) -> None:
    from matih_lite.lineage.recorder import attach_recorder

    attach_recorder(host)


@hookimpl
def shutdown(host: Host) -> None:
    from matih_lite.lineage.recorder import detach_recorder

    detach_recorder(host)
