"""Artifact quotas from ``[quotas]``: a size limit per upload and a total per tenant, so no editor can fill the disk.

```toml
[quotas]
max_artifact_mb = 512        # one uploaded file, at most
artifact_quota_gb = 50       # everything one tenant keeps in the artifacts slot

[quotas.research]            # one tenant, over the top-level keys (and [quotas."*"])
artifact_quota_gb = 200
```

Both are unset by default (no limit). The service checks them on every upload it receives (its REST upload and the
MLflow artifact proxy): past the per-upload limit the request is answered 413 as soon as the bytes read exceed it
(or at once, from its Content-Length), past the quota 507; in both cases nothing is written. The tenant's usage is
the sum of its files' sizes in the artifacts slot, listed once per upload while a quota is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.errors import ConfigError, QuotaExceeded

if TYPE_CHECKING:
    from matih_lite.host import Host


MB = 1 << 20
GB = 1 << 30
UNITS: dict[str, int] = {"max_artifact_mb": MB, "artifact_quota_gb": GB}
"""The ``[quotas]`` keys read here, each with the bytes in one of its units."""


class ArtifactQuota(msgspec.Struct, frozen=True):
    """One tenant's artifact limits, in bytes; None for no limit."""

    max_upload_bytes: int | None = None
    quota_bytes: int | None = None


def _layers(section: Mapping[str, Any], tenant: str | None) -> list[tuple[str, Mapping[str, Any]]]:
    layers: list[tuple[str, Mapping[str, Any]]] = [("quotas", section)]
    names = ["*"] + ([tenant] if tenant else [])
    for name in names:
        table = section.get(name)
        if isinstance(table, Mapping):
            layers.append((f'quotas."{name}"' if name == "*" else f"quotas.{name}", table))
    return layers


def _size(value: Any, key: str) -> int:
    unit = UNITS[key.rsplit(".", 1)[-1]]
    if isinstance(value, str):  # a ${VAR} read from the environment
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigError(f"expected a positive number ({'megabytes' if unit == MB else 'gigabytes'}), "
                          f"got {value!r}", key=key)
    return int(value * unit)


def artifact_quota(section: Mapping[str, Any] | None, tenant: str) -> ArtifactQuota:
    """``tenant``'s limits from ``[quotas]``: the top-level keys, then ``"*"``, then the tenant's table.

    Raises ConfigError with the key path for a value that is not a positive number.
    """
    found: dict[str, int] = {}
    for label, table in _layers(section or {}, tenant):
        for key in UNITS:
            if key in table:
                found[key] = _size(table[key], f"{label}.{key}")
    return ArtifactQuota(found.get("max_artifact_mb"), found.get("artifact_quota_gb"))


def check_quotas(host: Host, settings: Any) -> list[tuple[str, str]]:
    """Every artifact-quota value of ``[quotas]`` (top level and every tenant's table) that is not a positive number."""
    section = settings if isinstance(settings, Mapping) else {}
    problems: list[tuple[str, str]] = []
    tables = [("quotas", section)] + [(f'quotas."{k}"' if k == "*" else f"quotas.{k}", v)
                                      for k, v in section.items() if isinstance(v, Mapping)]
    for label, table in tables:
        for key in UNITS:
            if key in table:
                try:
                    _size(table[key], f"{label}.{key}")
                except ConfigError as exc:
                    problems.append((exc.key or label, exc.reason))
    return problems


def tenant_usage(artifacts: Any, tenant: str) -> int:
    """Bytes the tenant keeps in the artifacts slot (its runs', logged models' and traces' files)."""
    return sum(i.size for i in artifacts.list(tenant, recursive=True) if not i.is_dir)


def check_quota(artifacts: Any, tenant: str, quota: ArtifactQuota, incoming: int, replacing: str | None = None) -> None:
    """Raises QuotaExceeded when ``incoming`` more bytes would take ``tenant`` past its quota. ``replacing`` is the
    store path the upload overwrites (its current size is given back)."""
    if quota.quota_bytes is None:
        return
    used = tenant_usage(artifacts, tenant)
    if replacing:
        try:
            used -= artifacts.stat(replacing).size
        except Exception:  # nothing there yet
            pass
    if used + incoming > quota.quota_bytes:
        raise QuotaExceeded(
            f"tenant {tenant!r} keeps {_mb(used)} of artifacts; {_mb(incoming)} more would pass its quota of "
            f"{_mb(quota.quota_bytes)} ([quotas] artifact_quota_gb); delete runs' artifacts or ask for a larger quota",
            detail={"tenant": tenant, "used_bytes": used, "incoming_bytes": incoming,
                    "quota_bytes": quota.quota_bytes})


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB // 10 else f"{n} bytes"
