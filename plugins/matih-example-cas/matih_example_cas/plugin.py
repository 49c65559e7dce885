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


class BlobReader(io.RawIOBase):
    """Streams a blob and raises StoreError at EOF if it no longer hashes to its name."""

    def __init__(self, handle: BinaryIO, sha: str, path: str) -> None:
        self._handle, self._sha, self._path = handle, sha, path
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._handle.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif self._hash.hexdigest() != self._sha:
            raise StoreError(f"artifact {self._path!r} is corrupt: its blob no longer matches sha256 {self._sha}")
        return n

    def close(self) -> None:
        self._handle.close()
        super().close()


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
        for above in entry.parents:
            if above == self.index:
                break
            if above.is_file():  # a path is a file or a folder, never both
                raise InvalidInput(f"artifact path {rel!r} is inside {above.relative_to(self.index).as_posix()!r}, "
                                   "which is a file")
        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except BaseException:
            os.unlink(tmp)  # a put cut off half-way leaves nothing behind
            raise
        sha = digest.hexdigest()
        blob = self._blob(sha)
        blob.parent.mkdir(exist_ok=True)
        if blob.exists():
            os.unlink(tmp)  # already stored once: that is the point
        else:
            os.replace(tmp, blob)
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            out.write(f"{sha} {size}\n")
        os.replace(tmp, entry)  # the index entry appears whole or not at all
        return ArtifactInfo(rel, size, sha)

    def _read_entry(self, rel: str, entry: Path) -> tuple[str, int]:
        if not entry.is_file():
            raise NotFound(f"artifact {rel!r} does not exist")
        sha, size = entry.read_text().split()
        return sha, int(size)

    def open(self, path: str) -> BinaryIO:
        rel, entry = self._entry(path)
        sha, _ = self._read_entry(rel, entry)
        return io.BufferedReader(BlobReader(self._blob(sha).open("rb"), sha, rel))  # type: ignore[return-value]

    def get(self, path: str) -> bytes:
        with self.open(path) as handle:
            return handle.read()

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
            if item.name.startswith(".tmp-"):
                continue  # an index entry being written
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
        live = {p.read_text().split()[0] for p in self.index.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
        for blob in self.blobs.glob("*/*"):
            if blob.name not in live and not blob.name.startswith(".tmp-"):
                blob.unlink()


def create_store(settings: CasSettings, context: BackendContext) -> CasArtifactStore:
    return CasArtifactStore(context.resolve(settings.root) if settings.root else context.home / "cas")


@hookimpl
def register_backends(register):
    register("artifacts", "cas", create_store, settings=CasSettings,
             summary="content-addressed folder: identical files stored once (example plugin)")
