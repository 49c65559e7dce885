"""The one rule, read from the code: backends see only the contracts, domains never see a backend.

:func:`crossings` parses every module of the tree (imports inside functions included, relative ones
resolved) and returns each import that crosses a boundary:

- a slot backend (``matih_lite/builtin/``, ``backends/*/matih_*/``, the SQL in ``matih_lite/sqlstore/``
  that the SQL backends share, or a third party's package given as ``backend_packages``) imports from
  ``matih_lite`` only :data:`BACKEND_MAY_IMPORT`;
- a domain (:data:`DOMAINS`) imports no backend (``matih_lite.builtin``, any other ``matih_*``
  distribution), nor the service or the CLI;
- ``matih_lite.contracts`` imports nothing of ``matih_lite`` but itself and ``matih_lite.errors``.

A plugin author proves their backend the same way::

    from matih_lite.testing.boundaries import crossings

    def test_my_backend_sees_only_the_contracts():
        assert crossings(backend_packages=[Path(my_backend.__file__).parent]) == []
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DOMAINS: tuple[str, ...] = ("tracking", "registry", "serving", "monitoring", "training", "lineage", "features",
                            "auth", "promote")
"""The domain packages of matih_lite: written once, above the slots."""

BACKEND_MAY_IMPORT: tuple[str, ...] = ("matih_lite.contracts", "matih_lite.errors", "matih_lite.hookspecs",
                                       "matih_lite.sqlstore", "matih_lite.threads")
"""What a slot backend may import from matih_lite: the contracts, the errors, the hook markers, the SQL
written once for every SQL engine, and the thread-priority helper."""

DOMAIN_MAY_NOT_IMPORT: tuple[str, ...] = ("matih_lite.builtin", "matih_lite.service", "matih_lite.cli")

CONTRACTS_MAY_IMPORT: tuple[str, ...] = ("matih_lite.contracts", "matih_lite.errors")

ROOT = Path(__file__).resolve().parents[2]
"""The checkout holding ``matih_lite/``, ``backends/`` and ``plugins/``."""


@dataclass(frozen=True)
class Crossing:
    """One import that breaks the rule."""

    file: str
    line: int
    module: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module} ({self.rule})"


def imports(path: Path, package: str) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports (``package`` is its own dotted package, to resolve relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "matih_lite" or node.module is None:
                for alias in node.names:  # ``from matih_lite import serving``: the names are the modules
                    yield f"{module}.{alias.name}", node.lineno
            else:
                yield module, node.lineno


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules(folder: Path, package: str) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            yield path, ".".join(parts)
        else:
            yield path, ".".join(parts[:-1])


def _check_backend(folder: Path, package: str, root: Path) -> Iterator[Crossing]:
    for path, pkg in _modules(folder, package):
        for module, line in imports(path, pkg):
            if module.split(".")[0] != "matih_lite" or module in ("matih_lite",):
                continue
            if not _under(module, BACKEND_MAY_IMPORT):
                yield Crossing(_show(path, root), line, module,
                               "a backend sees only matih_lite.contracts, errors, hookspecs, sqlstore, threads: "
                               "move the type it needs into matih_lite.contracts")


def _show(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def crossings(root: Path = ROOT, *, backend_packages: Iterable[Path] = ()) -> list[Crossing]:
    """Every import under ``root`` (and in ``backend_packages``) that crosses a slot boundary."""
    found: list[Crossing] = []
    lite = root / "matih_lite"
    found += _check_backend(lite / "builtin", "matih_lite.builtin", root)
    found += _check_backend(lite / "sqlstore", "matih_lite.sqlstore", root)
    for folder in sorted(root.glob("backends/*/matih_*")):
        if folder.is_dir():
            found += _check_backend(folder, folder.name, root)
    for folder in backend_packages:
        folder = Path(folder)
        found += _check_backend(folder, folder.name, root)
    for domain in DOMAINS:
        folder = lite / domain
        if not folder.is_dir():
            continue
        for path, pkg in _modules(folder, f"matih_lite.{domain}"):
            for module, line in imports(path, pkg):
                top = module.split(".")[0]
                if _under(module, DOMAIN_MAY_NOT_IMPORT):
                    found.append(Crossing(_show(path, root), line, module,
                                          "a domain never imports a backend, the service or the CLI"))
                elif top.startswith("matih_") and top != "matih_lite":
                    found.append(Crossing(_show(path, root), line, module,
                                          "a domain never imports a backend distribution"))
    for path, pkg in _modules(lite / "contracts", "matih_lite.contracts"):
        for module, line in imports(path, pkg):
            if module.split(".")[0] == "matih_lite" and module != "matih_lite" and \
                    not _under(module, CONTRACTS_MAY_IMPORT):
                found.append(Crossing(_show(path, root), line, module,
                                      "the contracts import nothing above them"))
    return found
