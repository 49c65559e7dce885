"""Copy a model version's files from the artifacts slot into a local cache, once, checked.

``materialize(host, tenant, version)`` returns ``<home>/serving-cache/<key>/``, where ``key`` is
the sha256 of the version's location and of every file's path, size and sha256 as the artifact
store recorded them: the same files are copied once (a second call only lists them), and a
changed file gets a new folder. Each file is hashed as it is copied and must match the recorded
sha256; a folder becomes visible (an atomic rename) only once every file is in it.

Models whose loading can run code (pickle, cloudpickle, skops, pyfunc state) are loaded by the
serving backend only from this cache: that is, only from the registry's own artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matih_lite.contracts.artifacts import clean_path
from matih_lite.contracts.flavors import MANIFEST, SERVING_CACHE, is_verified_copy
from matih_lite.errors import InvalidInput, NotFound, StoreError

if TYPE_CHECKING:
    from matih_lite.host import Host


ARTIFACT_SCHEME = "mlflow-artifacts:/"
_CHUNK = 1 << 20


def cache_root(home: str | Path) -> Path:
    """Where materialized models live under a state folder."""
    return Path(home) / SERVING_CACHE


def artifact_prefix(tenant: str, version_or_prefix: Any) -> str:
    """The artifact-store folder holding a version's files (``{tenant}/...``).

    Takes a registry ModelVersion (its ``storage_location`` must be in the registry's artifacts,
    ``mlflow-artifacts:/...``), such a URI, or an artifact path already relative to the store.
    Raises InvalidInput for locations outside the registry's artifacts.
    """
    location = version_or_prefix
    if not isinstance(location, str):
        location = getattr(version_or_prefix, "storage_location", "") or getattr(version_or_prefix, "source", "")
    if not isinstance(location, str) or not location:
        raise InvalidInput("the version has no storage location; register it from a run or a logged model")
    if location.startswith(ARTIFACT_SCHEME):
        return clean_path(f"{tenant}/{location[len(ARTIFACT_SCHEME):].strip('/')}")
    if "://" in location or location.startswith(("runs:/", "models:/")):
        raise InvalidInput(f"{location!r} is outside the registry's artifacts; matih-lite serves models only from "
                           "there (log the model to a run, then register it)")
    prefix = clean_path(location)
    if prefix != tenant and not prefix.startswith(f"{tenant}/"):
        raise InvalidInput(f"artifact path {location!r} belongs to another tenant")
    return prefix


def materialize(host: Host, tenant: str, version_or_prefix: Any, *, root: str | Path | None = None) -> Path:
    """A local folder with the model's files (copied on first use); see the module docstring.

    Raises NotFound when the location holds no files, StoreError when a file's bytes do not
    match its recorded sha256.
    """
    store = host.artifacts
    prefix = artifact_prefix(tenant, version_or_prefix)
    files = [i for i in store.list(prefix, recursive=True) if not i.is_dir]
    if not files:
        try:
            info = store.stat(prefix)
        except NotFound:
            info = None
        if info is None or info.is_dir:
            raise NotFound(f"no model files at {prefix!r} in the artifact store")
        files = [info]  # the location is one file (a bare model.onnx)
        base = prefix.rsplit("/", 1)[0]
    else:
        base = prefix
    manifest = [{"path": i.path[len(base) + 1:], "size": i.size, "sha256": i.sha256} for i in files]
    digest = hashlib.sha256(json.dumps({"source": prefix, "files": manifest}, sort_keys=True).encode()).hexdigest()
    cache = Path(root) if root is not None else cache_root(host.context.home)
    target = cache / digest
    if (target / MANIFEST).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        for entry, info in zip(manifest, files):
            _copy(store, info.path, staging / clean_path(entry["path"]), entry["sha256"])
        (staging / MANIFEST).write_text(json.dumps({"source": prefix, "files": manifest}, indent=1))
        try:
            os.replace(staging, target)  # the folder appears whole or not at all
        except OSError:
            if not (target / MANIFEST).is_file():  # not a copy that won a race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_materialized(path: str | Path, home: str | Path) -> bool:
    """Whether ``path`` is inside the serving cache of ``home`` and was copied whole."""
    return is_verified_copy(path, cache_root(home))


def _copy(store: Any, path: str, dest: Path, expected: str | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with store.open(path) as src, dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if expected and digest.hexdigest() != expected:
        raise StoreError(f"artifact {path!r} is corrupt: its sha256 does not match the one recorded; "
                         "re-log the model")
