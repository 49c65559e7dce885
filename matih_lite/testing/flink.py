"""Flink jobs for tests and benchmarks: the PyFlink environment, a profile that runs drift on Flink, the service.

    from matih_lite.testing.flink import flink_environment, flink_profile, FlinkService

    env = flink_environment()                      # built once and cached (see matih_flink.environment)
    toml = flink_profile(kafka, tmp_path)          # [profiles.lite] with events on Kafka, drift on Flink
    with FlinkService(host) as url:                # the ml-service (its drift runner starts the job) ...
        ...                                        # ... the runner pointed at this service's URL

:func:`flink_environment` turns "no PyFlink environment can be had here" (no route to the package index, no
Java) into a skip locally and a failure under ``CI=true`` (:func:`~matih_lite.testing.processes.engine_missing`).
The jobs' processes are the runner's: it stops them by their PIDs when the service stops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import engine_missing


def flink_environment() -> Any:
    """The cached PyFlink environment (built on first use), or a skip (a failure in CI) when it cannot be."""
    try:
        from matih_flink.environment import flink_env, java_version
    except ImportError:
        engine_missing("matih-flink is not installed (pip install -e backends/flink)")
    major, line = java_version()
    if major is None or major < 11:
        engine_missing(f"Flink needs Java 11+: {line}")
    try:
        return flink_env()
    except RuntimeError as exc:
        engine_missing(f"the PyFlink environment cannot be built here: {exc}")


def flink_profile(kafka: Any, folder: Path, *, topic_prefix: str = "", drift: dict[str, Any] | None = None,
                  extra: str = "") -> str:
    """matih.toml text: the lite profile with events on ``kafka`` (a started Tansu) and drift on Flink
    (work folder under ``folder``, fast restarts), then ``extra``."""
    settings = {"backend": "flink", "work_dir": str(Path(folder) / "flink"), "checkpoint_interval": "2s",
                "poll_seconds": 1.0, "restart_backoff_seconds": 1.0, **(drift or {})}
    events = kafka.events_toml(topic_prefix=topic_prefix)
    return f"[profiles.lite]\nevents = {events}\ndrift = {_inline(settings)}\n{extra}"


def _inline(values: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
                            for k, v in values.items()) + " }"


class FlinkService:
    """The host's ml-service in a thread (lifespan included: the drift runner starts), the Flink runner told
    the service's URL first (the job reads baselines from it). Yields the URL."""

    def __init__(self, host: Any) -> None:
        from matih_lite.testing.service import ServiceThread

        self.host = host
        self.service = ServiceThread(host)
        self.url = self.service.url
        runner = host.backend("drift")
        if getattr(runner, "settings", None) is not None and hasattr(runner.settings, "service_url"):
            runner.settings.service_url = self.url

    def __enter__(self) -> str:
        self.service.start(60.0)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.service.stop(240.0)


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5,
               describe: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (returned); AssertionError naming ``what`` at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s" + (f"; {describe()}" if describe else ""))
        time.sleep(interval)
