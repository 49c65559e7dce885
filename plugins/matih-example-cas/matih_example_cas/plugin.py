"""``artifacts = { backend = "cas" }``: files stored once per distinct content, addressed by sha256.

Layout under ``root``: ``blobs/ab/abcdef...`` holds the bytes; ``index/<path>`` holds
``<sha256> <size>`` for each artifact path. Two paths with the same bytes share one blob.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.artifacts import ArtifactInfo, clean_path
from matih_lite.errors import InvalidInput, NotFound, StoreError
from matih_lite.hookspecs import hookimpl


class CasSettings(msgspec.Struct, forbid_unknown_fields=True):
    root: str | None = None
    """Folder for blobs and the index; default ``<home>/cas``."""


class CasArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.blobs = self.root / "blobs"
        self.index = self.root / "index"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.index.mkdir(parents=True, exist_ok=True)

    def _entry(self, path: str, allow_root: bool = False) -> tuple[str, Path]:
        rel = clean_path(path, allow_root=allow_root)
        entry = self.index / rel if rel else self.index
        resolved = entry.resolve()
        if resolved != self.index.resolve() and self.index.resolve() not in resolved.parents:
            raise InvalidInput(f"artifact path {path!r} leads outside the artifact root")
        return rel, entry

    def _blob(self, sha: str) -> Path:
        return self.blobs / sha[:2] / sha

    def health(self) -> Health:
        return Health(os.access(self.root, os.W_OK), str(self.root))

    def put(self, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        rel, entry = self._entry(path)
        if entry.is_dir():
            raise InvalidInput(f"artifact path {path!r} is a folder")
        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        blob = self._blob(sha)
        blob.parent.mkdir(exist_ok=True)
        if blob.exists():
            os.unlink(tmp)  # already stored once: that is the point
        else:
            os.replace(tmp, blob)
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(f"{sha} {size}\n")
        return ArtifactInfo(rel, size, sha)

    def _read_entry(self, rel: str, entry: Path) -> tuple[str, int]:
        if not entry.is_file():
            raise NotFound(f"artifact {rel!r} does not exist")
        sha, size = entry.read_text().split()
        return sha, int(size)

    def open(self, path: str) -> BinaryIO:
        return io.BytesIO(self.get(path))  # type: ignore[return-value]

    def get(self, path: str) -> bytes:
        rel, entry = self._entry(path)
        sha, _ = self._read_entry(rel, entry)
        data = self._blob(sha).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"artifact {rel!r} is corrupt: its blob no longer matches sha256 {sha}")
        return data

    def stat(self, path: str) -> ArtifactInfo:
        rel, entry = self._entry(path, allow_root=True)
        if entry.is_dir():
            return ArtifactInfo(rel, 0, None, True)
        sha, size = self._read_entry(rel, entry)
        return ArtifactInfo(rel, size, sha)

    def list(self, prefix: str = "", recursive: bool = False) -> list[ArtifactInfo]:
        rel, base = self._entry(prefix, allow_root=True)
        if not base.is_dir():
            return []
        out = []
        for item in (base.rglob("*") if recursive else base.iterdir()):
            child = item.relative_to(self.index).as_posix()
            if item.is_dir():
                if not recursive:
                    out.append(ArtifactInfo(child, 0, None, True))
            else:
                sha, size = item.read_text().split()
                out.append(ArtifactInfo(child, int(size), sha))
        return sorted(out, key=lambda i: i.path)

    def delete(self, path: str) -> int:
        rel, entry = self._entry(path, allow_root=True)
        files = [entry] if entry.is_file() else sorted(entry.rglob("*"), reverse=True) if entry.is_dir() else []
        removed = 0
        for f in files:
            if f.is_file():
                f.unlink()
                removed += 1
            elif f.is_dir():
                f.rmdir()
        if entry.is_dir() and rel:
            entry.rmdir()
        self._collect_garbage()
        return removed

    def _collect_garbage(self) -> None:
        """Remove blobs no index entry points at any more."""
        live = {p.read_text().split()[0] for p in self.index.rglob("*") if p.is_file()}
        for blob in self.blobs.glob("*/*"):
            if blob.name not in live and not blob.name.startswith(".tmp-"):
                blob.unlink()


def create_store(settings: CasSettings, context: BackendContext) -> CasArtifactStore:
    return CasArtifactStore(context.resolve(settings.root) if settings.root else context.home / "cas")


@hookimpl
def register_backends(register):
    register("artifacts", "cas", create_store, settings=CasSettings,
             summary="content-addressed folder: identical files stored once (example plugin)")
