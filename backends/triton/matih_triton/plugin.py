"""``serving = { backend = "triton", url = "http://triton:8000", repository = "..." }``: models served by Triton.

The settings are validated without importing tritonclient or boto3; both load when the backend
first talks to Triton or to S3.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl

_URL = re.compile(r"^https?://[^/\s]+/?$")


class TritonSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "http://127.0.0.1:8000"
    """Triton's HTTP endpoint (the inference protocol and the repository extension), ``http[s]://host:port``."""
    repository: str | None = None
    """Triton's model repository, as this process writes it and Triton reads it: a folder (shared with Triton,
    relative to matih.toml's folder), ``s3://bucket/prefix`` or ``s3://http://host:port/bucket/prefix``.
    Default: ``<state folder>/triton-models`` (a Triton on this machine)."""
    instances: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """Model instances per version (``instance_group [{ kind: KIND_CPU, count }]``)."""
    max_batch_size: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 64
    """Rows Triton's dynamic batcher may put in one model call; 0 turns batching off."""
    max_queue_delay_us: Annotated[int, msgspec.Meta(ge=0)] = 0
    """How long Triton holds a request back for company (``dynamic_batching``); 0: never waits."""
    onnx_runtime: Literal["auto", "onnxruntime", "python"] = "auto"
    """How ONNX models run: Triton's ``onnxruntime_onnx`` platform, or a Python-backend ``model.py`` with
    onnxruntime (for a Triton without the onnxruntime backend); ``auto`` tries the platform once, and uses
    the Python backend from then on when Triton has no onnxruntime backend."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Connect and read timeout of an inference call."""
    load_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """How long a model may take to load."""
    intra_op_threads: Annotated[int, msgspec.Meta(ge=0)] = 1
    """Threads one prediction may use inside Triton (onnxruntime intra-op, XGBoost nthread)."""
    trusted_types: list[str] = msgspec.field(default_factory=list)
    """skops types to trust for every model, beyond each model's own ``skops_trusted_types``."""
    trusted_dirs: list[str] = msgspec.field(default_factory=list)
    """Folders besides the serving cache from which pickled models may be sent to Triton (default: none)."""
    s3_region: str | None = None
    """For an ``s3://`` repository: the region, and the keys (both or neither; neither: the AWS environment)."""
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    def __post_init__(self) -> None:
        if not _URL.match(self.url):
            raise ValueError(f"url: {self.url!r} must look like http://host:port (Triton's HTTP endpoint)")
        self.url = self.url.rstrip("/")
        if self.repository is not None and not self.repository.strip():
            raise ValueError("repository: give a folder or an s3:// location, or leave it out")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError("s3_access_key_id, s3_secret_access_key: give both or neither")


def create_backend(settings: TritonSettings | None, context: BackendContext):
    """The backend for ``settings``; nothing is contacted until its first call."""
    from matih_triton.backend import TritonServing

    settings = settings or TritonSettings()
    repository = settings.repository or str(context.home / "triton-models")
    if "://" not in repository:
        repository = str(context.resolve(repository))
    return TritonServing(settings, repository=repository, model_cache=context.model_cache,
                         trusted_dirs=[context.resolve(d) for d in settings.trusted_dirs])


@hookimpl
def register_backends(register):
    register("serving", "triton", create_backend, settings=TritonSettings,
             summary="Triton Inference Server: versions written to its model repository, loaded and called over HTTP")
