"""``ml.log_input``: the SDK's lineage call (exported by :mod:`matih_lite.sdk`)."""

from __future__ import annotations

from typing import Any


def log_input(dataset_uri: str, version: str | None = None, digest: str | None = None,
              name: str | None = None, *, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record that the active run reads a dataset (starting a run if none is active).

    Adds the lineage edge ``dataset:<uri>@<version> -> run:<run_id>`` and sets the run tag
    ``matih.dataset.<name>`` = ``{"uri", "version", "digest", ...properties}`` (JSON), which the
    registry copies into a version's training data and model cards show. ``name`` defaults to
    the URI's last segment; logging the same uri and version again reuses its tag.
    ``properties`` describe the data (``start_date``, ``end_date``, ``rows``, ``quality_score``).
    Works embedded and over ``MATIH_URL`` alike::

        ml.log_input("s3://bucket/train.parquet", version="v3", digest="sha256:9f2c...",
                     properties={"start_date": "2024-01-01", "end_date": "2024-06-30"})

    Returns ``{"name": <tag name>, "node": {...}, "tags": {...}}``.
    """
    from matih_lite.lineage.client import LineageClient
    from matih_lite.sdk import _active_or_start

    run = _active_or_start()
    return LineageClient.of(run.client).log_input(run.run_id, dataset_uri, version=version, digest=digest,
                                                  name=name, properties=properties)
