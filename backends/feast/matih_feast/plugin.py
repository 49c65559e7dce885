"""``features = { backend = "feast", ... }``: settings and registration (Feast loads in :mod:`matih_feast.store`)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from matih_lite.contracts import BackendContext
from matih_lite.hookspecs import hookimpl


class FeastSettings(msgspec.Struct, forbid_unknown_fields=True):
    repo: str = "features"
    """The folder of ``*.toml`` definitions, relative to matih.toml's folder (read by the features domain)."""
    redis: str = "127.0.0.1:6379"
    """Redis as Feast's ``connection_string`` takes it: ``host:port`` with optional ``,password=...,ssl=true``."""
    db: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The Redis database number."""
    online_store: Literal["redis", "sqlite"] = "redis"
    """``sqlite`` is Feast's SQLite store in the state folder (for comparing with Feast on a laptop)."""
    offline_store: Literal["duckdb", "file"] = "duckdb"
    """Feast's offline store: ``duckdb`` (the default) or ``file`` (dask; its dropped rows are put back)."""
    feast_repo: str | None = None
    """Where the generated Feast repos live, one folder per project; default ``<home>/feast``."""
    key_ttl_seconds: int | None = None
    """Redis key expiry for entities (Feast's ``key_ttl_seconds``); None keeps them."""
    batch_rows: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    """Entity rows per Feast call when entity rows stream from a file."""


def create_store(settings: FeastSettings, context: BackendContext):
    from matih_feast.store import FeastFeatureStore

    return FeastFeatureStore(settings, context)


@hookimpl
def register_backends(register):
    register("features", "feast", create_store, settings=FeastSettings,
             summary="Feast 0.67: the definitions as a Feast repo; Feast's offline store; Redis online")
