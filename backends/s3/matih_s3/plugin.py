"""``artifacts = { backend = "s3", bucket = "ml-artifacts", ... }``: the artifacts slot in an S3 bucket.

Works with AWS S3 and with S3-compatible servers (MinIO, SeaweedFS, Ceph) through ``endpoint_url``.
The settings are validated without importing boto3; boto3 loads on the store's first call.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.contracts.artifacts import clean_path
from matih_lite.errors import InvalidInput
from matih_lite.hookspecs import hookimpl

MiB = 1 << 20
MIN_PART = 5 * MiB
"""S3 refuses parts smaller than 5 MiB (but the last)."""
MAX_PART = 5 * 1024 * MiB

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2,
          "mi": 1 << 20, "mib": 1 << 20, "g": 1000**3, "gb": 1000**3, "gi": 1 << 30, "gib": 1 << 30,
          "t": 1000**4, "tb": 1000**4, "ti": 1 << 40, "tib": 1 << 40}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def byte_size(value: int | str, key: str) -> int:
    """``8388608``, ``"8MiB"``, ``"16 MB"`` -> bytes. Raises ValueError naming ``key``."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{key}: a size cannot be negative, got {value}")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{key}: {value!r} is not a size; write bytes (8388608) or with a unit ('8MiB', '16MB')")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


class S3Settings(msgspec.Struct, forbid_unknown_fields=True):
    bucket: str
    """The bucket (it must exist: the backend never creates buckets)."""
    prefix: str = ""
    """Folder inside the bucket holding every artifact, e.g. ``"matih/prod"``; ``""`` is the whole bucket."""
    endpoint_url: str | None = None
    """An S3-compatible server (``http://minio:9000``); empty means AWS."""
    region: str | None = None
    """Region name; default from the AWS chain, or ``us-east-1`` with an ``endpoint_url``."""
    access_key_id: str | None = None
    """Give both keys or neither; without them the usual AWS chain applies (environment, profile, role)."""
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    """``path`` (``endpoint/bucket/key``) is the default with an ``endpoint_url``, ``auto`` without."""
    verify: bool | str = True
    """TLS verification: ``false``, or a CA bundle file for a server with its own certificate."""
    multipart_threshold: int | str = "16MiB"
    """Artifacts above this size go up as multipart uploads (at least 5 MiB)."""
    part_size: int | str = "8MiB"
    """Size of each part (5 MiB to 5 GiB); raised for files that would need more than 10,000 parts."""
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    """Parts in flight per upload, and HEAD requests in flight per listing."""
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    read_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    """Attempts per request (botocore's standard retry mode) before the call fails with StoreError."""
    abandoned_upload_hours: Annotated[float, msgspec.Meta(ge=0)] = 24.0
    """Multipart uploads under the prefix begun longer ago than this (by a process that was killed) are
    aborted once the bucket answers; 0 leaves them alone."""

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise ValueError(f"bucket: {self.bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase "
                             "letters, digits, '.' and '-', starting and ending with a letter or digit)")
        try:
            self.prefix = clean_path(self.prefix, allow_root=True)
        except InvalidInput as exc:
            raise ValueError(f"prefix: {exc.message}") from None
        self.endpoint_url = self.endpoint_url or None
        if self.endpoint_url and not re.match(r"^https?://", self.endpoint_url):
            raise ValueError(f"endpoint_url: {self.endpoint_url!r} must start with http:// or https://")
        self.region = self.region or None
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id, secret_access_key: give both or neither (neither uses the AWS chain)")
        self.multipart_threshold = byte_size(self.multipart_threshold, "multipart_threshold")
        self.part_size = byte_size(self.part_size, "part_size")
        if self.multipart_threshold < MIN_PART:
            raise ValueError(f"multipart_threshold: at least 5 MiB ({MIN_PART} bytes), got {self.multipart_threshold}")
        if not MIN_PART <= self.part_size <= MAX_PART:
            raise ValueError(f"part_size: between 5 MiB and 5 GiB, got {self.part_size} bytes")

    @property
    def where(self) -> str:
        """``s3://bucket/prefix`` and the endpoint, for messages."""
        location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{location} at {self.endpoint_url}" if self.endpoint_url else location


def create_store(settings: S3Settings, context: BackendContext):
    """The store for ``settings``; nothing is contacted (nor boto3 imported) until its first call."""
    from matih_s3.store import S3ArtifactStore

    return S3ArtifactStore(settings)


@hookimpl
def register_backends(register):
    register("artifacts", "s3", create_store, settings=S3Settings,
             summary="an S3 bucket (AWS, MinIO, SeaweedFS) through boto3; the cluster artifacts store")
