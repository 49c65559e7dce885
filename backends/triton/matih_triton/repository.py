"""Where model versions are written for Triton to read: a folder, or an S3 bucket (``s3://``).

Triton's layout: ``<name>/config.pbtxt`` and ``<name>/<version>/<files>``. A version is written
whole before Triton is asked to load it; in a folder it appears by renames (a reader never sees half
of it), in S3 its files are uploaded and then every other object under ``<name>/`` is removed.

S3 locations are written as Triton reads them: ``s3://bucket/prefix`` (AWS; the region and keys from
the settings or the usual AWS environment) or ``s3://http://host:port/bucket/prefix`` (an
S3-compatible server such as MinIO or SeaweedFS). Triton needs the same keys in its own environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), and the prefix must hold an
object before Triton starts (:meth:`S3Repository.ensure` puts one; the backend does on its first write).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matih_lite.errors import InvalidInput, StoreError

Files = Mapping[str, "Path | bytes"]
"""A version's files by path relative to the model's folder: a local file to copy, or bytes."""

MARKER = ".matih-triton-repository"
"""An empty object at an S3 repository's prefix, so the prefix exists before any model does."""

_S3 = re.compile(r"^s3://(?:(?P<scheme>https?)://(?P<host>[^/]+)/)?(?P<bucket>[^/]+)(?:/(?P<prefix>.*))?$")


@dataclass(frozen=True)
class S3Location:
    """An ``s3://`` repository as Triton names it."""

    bucket: str
    prefix: str
    endpoint_url: str | None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        match = _S3.match(url)
        if not match:
            raise InvalidInput(f"repository {url!r} is not an S3 location: write s3://bucket/prefix, or "
                               "s3://http://host:port/bucket/prefix for an S3-compatible server")
        endpoint = f"{match['scheme']}://{match['host']}" if match["scheme"] else None
        return cls(match["bucket"], (match["prefix"] or "").strip("/"), endpoint)


class FolderRepository:
    """A model repository in a local (or mounted) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def write(self, name: str, config: str, version: int, files: Files) -> None:
        """Replace ``<name>/<version>/`` with ``files`` and ``<name>/config.pbtxt`` with ``config``."""
        model = self.root / name
        try:
            model.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model))
            try:
                for rel, source in files.items():
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if isinstance(source, (bytes, bytearray)):
                        target.write_bytes(source)
                    else:
                        shutil.copyfile(source, target)
                final = model / str(version)
                if final.exists():
                    old = model / f".old-{os.getpid()}-{threading.get_ident()}"
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(final, old)
                    os.replace(staging, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            for stale in model.iterdir():  # versions this model no longer has (it is one version per key)
                if stale.is_dir() and stale.name.isdigit() and stale.name != str(version):
                    shutil.rmtree(stale, ignore_errors=True)
            tmp = model / f".config-{os.getpid()}-{threading.get_ident()}"
            tmp.write_text(config, encoding="utf-8")
            os.replace(tmp, model / "config.pbtxt")
        except OSError as exc:
            raise StoreError(f"cannot write model {name} into the Triton repository {self.root}: {exc}") from exc

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def ensure(self) -> None:
        """Create the repository folder (Triton refuses to start on one that does not exist)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def listing(self, name: str) -> list[str]:
        """Every file of a model, relative to the repository (for tests and messages)."""
        base = self.root / name
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()


class S3Repository:
    """A model repository in an S3 bucket, written with boto3 (imported on first use)."""

    def __init__(self, url: str, *, region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None) -> None:
        self.url = url
        self.location = S3Location.parse(url)
        self._credentials = {"region_name": region or (None if not self.location.endpoint_url else "us-east-1"),
                             "aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError as exc:
                    raise InvalidInput("an s3:// Triton repository needs boto3: pip install 'matih-triton[s3]'") \
                        from exc
                config = Config(s3={"addressing_style": "path"} if self.location.endpoint_url else {},
                                retries={"max_attempts": 3, "mode": "standard"})
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.location.endpoint_url, config=config,
                    **{k: v for k, v in self._credentials.items() if v})
            return self._client

    def key(self, rel: str) -> str:
        return f"{self.location.prefix}/{rel}" if self.location.prefix else rel

    def _keys(self, name: str) -> list[str]:
        s3 = self._s3()
        found: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                 Prefix=self.key(f"{name}/")):
            found += [o["Key"] for o in page.get("Contents") or ()]
        return found

    def write(self, name: str, config: str, version: int, files: Files) -> None:
        try:
            s3 = self._s3()
            written = set()
            for rel, source in files.items():
                key = self.key(f"{name}/{version}/{rel}")
                body = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
                s3.put_object(Bucket=self.location.bucket, Key=key, Body=bytes(body))
                written.add(key)
            config_key = self.key(f"{name}/config.pbtxt")
            s3.put_object(Bucket=self.location.bucket, Key=config_key, Body=config.encode("utf-8"))
            written.add(config_key)
            stale = [k for k in self._keys(name) if k not in written]
            for start in range(0, len(stale), 1000):
                s3.delete_objects(Bucket=self.location.bucket,
                                  Delete={"Objects": [{"Key": k} for k in stale[start:start + 1000]], "Quiet": True})
        except InvalidInput:
            raise
        except Exception as exc:  # botocore's many client and connection errors
            raise StoreError(f"cannot write model {name} into the Triton repository {self.url}: "
                             f"{type(exc).__name__}: {exc}") from exc

    def ensure(self) -> None:
        """Put a marker object at the prefix: Triton refuses to start on an ``s3://`` prefix holding no object
        ("repository path is not a valid directory"). Top-level files are not models to Triton."""
        try:
            self._s3().put_object(Bucket=self.location.bucket, Key=self.key(MARKER), Body=b"")
        except InvalidInput:
            raise
        except Exception as exc:
            raise StoreError(f"cannot create the Triton repository {self.url}: {type(exc).__name__}: {exc}") from exc

    def remove(self, name: str) -> None:
        try:
            keys = self._keys(name)
            for start in range(0, len(keys), 1000):
                self._s3().delete_objects(Bucket=self.location.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})
        except Exception as exc:
            raise StoreError(f"cannot remove model {name} from the Triton repository {self.url}: {exc}") from exc

    def listing(self, name: str) -> list[str]:
        prefix = self.key("")
        return sorted(k[len(prefix):] for k in self._keys(name))

    def read(self, path: str) -> bytes:
        return self._s3().get_object(Bucket=self.location.bucket, Key=self.key(path))["Body"].read()


def open_repository(url: str, **s3: Any) -> FolderRepository | S3Repository:
    """The repository a ``repository`` setting names: ``s3://...``, else a folder."""
    if url.startswith("s3://"):
        return S3Repository(url, **s3)
    if "://" in url:
        raise InvalidInput(f"repository {url!r}: matih-triton writes to a folder or s3://; gs:// and as:// "
                           "repositories are not supported")
    return FolderRepository(url)
