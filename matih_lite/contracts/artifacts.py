"""The artifacts slot: files by path, with their sha256 recorded at write and checked at read."""

from __future__ import annotations

import posixpath
from typing import BinaryIO, Protocol, runtime_checkable

import msgspec

from matih_lite.contracts.records import Health
from matih_lite.errors import InvalidInput


class ArtifactInfo(msgspec.Struct, frozen=True):
    path: str
    size: int = 0
    sha256: str | None = None
    is_dir: bool = False


@runtime_checkable
class ArtifactStore(Protocol):
    """Files addressed by relative POSIX paths, confined to the store's root.

    Every path goes through :func:`clean_path` first: absolute paths, ``..``, empty
    segments, backslashes and NUL raise ``InvalidInput``; so do links that leave the root.
    """

    def health(self) -> Health:
        """Whether the root is reachable and writable."""

    def put(self, path: str, data: bytes | BinaryIO) -> ArtifactInfo:
        """Write (or replace) a file, recording size and sha256. Raises InvalidInput."""

    def open(self, path: str) -> BinaryIO:
        """A reader for the file that raises StoreError at EOF if its sha256 no longer matches."""

    def get(self, path: str) -> bytes:
        """The whole file, checked. Raises NotFound, StoreError on a checksum mismatch."""

    def stat(self, path: str) -> ArtifactInfo:
        """Size and sha256 of a file, or ``is_dir`` for a folder. Raises NotFound."""

    def list(self, prefix: str = "", recursive: bool = False) -> list[ArtifactInfo]:
        """Entries under ``prefix`` (a folder), sorted by path; folders as ``is_dir`` unless recursive."""

    def delete(self, path: str) -> int:
        """Delete a file or a folder with everything under it; returns files removed (0 if none)."""


def clean_path(path: str, *, allow_root: bool = False) -> str:
    """Normalize an artifact path or raise ``InvalidInput`` saying what is wrong with it.

    Returns a relative POSIX path without leading or trailing slashes; ``""`` (the root)
    only when ``allow_root``.
    """
    if not isinstance(path, str):
        raise InvalidInput(f"artifact path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise InvalidInput("artifact path contains a NUL byte")
    if "\\" in path:
        raise InvalidInput(f"artifact path {path!r} contains a backslash; use '/'")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise InvalidInput(f"artifact path {path!r} is absolute; give a path relative to the run")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidInput(f"artifact path {path!r} contains '..'; paths may not leave their root")
    cleaned = posixpath.join(*parts) if parts else ""
    if not cleaned and not allow_root:
        raise InvalidInput("artifact path is empty")
    return cleaned

