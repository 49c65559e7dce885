"""``artifacts = { backend = "local" }``: files in a folder, sha256 recorded beside each, checked on read."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import msgspec

from matih_lite.contracts import BackendContext, Health
from matih_lite.contracts.artifacts import ArtifactInfo, clean_path
from matih_lite.errors import InvalidInput, NotFound, StoreError
from matih_lite.hookspecs import hookimpl

SUMS = ".sha256"
"""Folder under the root mirroring the tree with one ``<file>.sha256`` per file; never listed."""

_CHUNK = 1 << 20


class LocalSettings(msgspec.Struct, forbid_unknown_fields=True):
    root: str | None = None
    """Folder holding the artifacts; default ``<home>/artifacts``."""


class CheckedReader(io.RawIOBase):
    """Reads a file and raises StoreError at EOF if its bytes do not hash to the recorded sha256."""

    def __init__(self, handle: BinaryIO, expected: str | None, path: str) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self._expected = expected
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._handle.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif self._expected and self._hash.hexdigest() != self._expected:
            raise StoreError(f"artifact {self._path!r} is corrupt: its sha256 no longer matches the one recorded")
        return n

    def close(self) -> None:
        self._handle.close()
        super().close()


class LocalArtifactStore:
    """The :class:`~matih_lite.contracts.ArtifactStore` contract over a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def _file(self, path: str, *, allow_root: bool = False) -> tuple[str, Path]:
        rel = clean_path(path, allow_root=allow_root)
        if rel == SUMS or rel.startswith(SUMS + "/"):
            raise InvalidInput(f"artifact path {path!r} is reserved")
        target = self.root / rel
        # Refuse links that lead out of the root, wherever they sit on the path.
        resolved = target.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidInput(f"artifact path {path!r} leads outside the artifact root")
        return rel, target

    def _sum_file(self, rel: str) -> Path:
        return self.root / SUMS / (rel + ".sha256")

    def health(self) -> Health:
        probe = self.root / SUMS / ".health"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            return Health(False, f"cannot write to {self.root}: {exc}")
        return Health(True, str(self.root))

    def put(self, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        rel, target = self._file(path)
        if target.is_dir():
            raise InvalidInput(f"artifact path {path!r} is a folder")
        for above in target.parents:
            if above == self.root:
                break
            if above.is_file():
                raise InvalidInput(f"artifact path {rel!r} is inside {above.relative_to(self.root).as_posix()!r}, "
                                   "which is a file")
        created = [p for p in (target.parent, *target.parent.parents) if self.root in p.parents and not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    out.write(data)
                    digest.update(data)
                    size = len(data)
                else:
                    while chunk := data.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            sha = digest.hexdigest()
            sums = self._sum_file(rel)
            sums.parent.mkdir(parents=True, exist_ok=True)
            sums.write_text(f"{sha} {size}\n")
            os.replace(tmp, target)  # the file appears whole or not at all
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            for folder in created:  # the folders this put made, deepest first: a failed put leaves none
                try:
                    folder.rmdir()
                except OSError:
                    break  # another put has filled it meanwhile
            raise
        return ArtifactInfo(rel, size, sha)

    def _recorded(self, rel: str) -> tuple[str | None, int | None]:
        try:
            sha, size = self._sum_file(rel).read_text().split()
            return sha, int(size)
        except (OSError, ValueError):
            return None, None

    def open(self, path: str) -> BinaryIO:
        rel, target = self._file(path)
        if not target.is_file():
            raise NotFound(f"artifact {rel!r} does not exist")
        sha, _ = self._recorded(rel)
        return io.BufferedReader(CheckedReader(target.open("rb"), sha, rel))  # type: ignore[return-value]

    def get(self, path: str) -> bytes:
        with self.open(path) as handle:
            return handle.read()

    def stat(self, path: str) -> ArtifactInfo:
        rel, target = self._file(path, allow_root=True)
        if target.is_dir():
            return ArtifactInfo(rel, 0, None, True)
        if not target.is_file():
            raise NotFound(f"artifact {rel!r} does not exist")
        sha, _ = self._recorded(rel)
        return ArtifactInfo(rel, target.stat().st_size, sha)

    def list(self, prefix: str = "", recursive: bool = False) -> list[ArtifactInfo]:
        rel, base = self._file(prefix, allow_root=True)
        if not base.is_dir():
            return []
        out: list[ArtifactInfo] = []
        entries = base.rglob("*") if recursive else base.iterdir()
        for entry in entries:
            child = entry.relative_to(self.root).as_posix()
            if child == SUMS or child.startswith(SUMS + "/") or entry.name.startswith(".tmp-"):
                continue
            if entry.is_symlink():
                continue  # never follow or expose links
            if entry.is_dir():
                if not recursive:
                    out.append(ArtifactInfo(child, 0, None, True))
            elif entry.is_file():
                sha, _ = self._recorded(child)
                out.append(ArtifactInfo(child, entry.stat().st_size, sha))
        return sorted(out, key=lambda i: i.path)

    def delete(self, path: str) -> int:
        rel, target = self._file(path, allow_root=True)
        if target.is_dir():
            removed = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target)
            sums = self.root / SUMS / rel if rel else self.root / SUMS
            shutil.rmtree(sums, ignore_errors=True)
            if not rel:
                self.root.mkdir(exist_ok=True)
            return removed
        if target.is_file():
            target.unlink()
            self._sum_file(rel).unlink(missing_ok=True)
            return 1
        return 0


def create_store(settings: LocalSettings, context: BackendContext) -> LocalArtifactStore:
    root = context.resolve(settings.root) if settings.root else context.home / "artifacts"
    return LocalArtifactStore(root)


@hookimpl
def register_backends(register):
    register("artifacts", "local", create_store, settings=LocalSettings,
             summary="a local folder; the lite default")
