"""Artifact paths as clients wrote them in a URL: never silently rewritten.

A ``{path:path}`` parameter arrives percent-decoded with bytes that are not UTF-8 replaced by
U+FFFD (so two different names could land on one file) and with the URL's own leading ``/``. Here
a path that is not valid UTF-8 is refused, and so is one that is absolute (a second leading ``/``)
or has an empty segment (``a//b``), each with a 400 naming the problem.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from matih_lite.errors import InvalidInput


def artifact_path(request: Any, path: str) -> str:
    """The artifact path of ``request``'s ``{path:path}`` parameter ``path``, without the URL's leading ``/``.

    Raises InvalidInput for a path that is not valid UTF-8, is absolute, or has an empty segment. (The
    router collapses ``//`` in ``path``; the raw request path still shows it.)
    """
    raw = request.scope.get("raw_path") or b""
    try:
        sent = unquote_to_bytes(raw).decode("utf-8", "strict")
    except UnicodeDecodeError:
        raise InvalidInput("the artifact path is not valid UTF-8 (percent-encoded bytes such as %FF): name "
                           "artifacts in UTF-8") from None
    rel = path[1:] if path.startswith("/") else path
    if "//" in sent.rstrip("/"):
        absolute = rel and sent.endswith("//" + rel)
        raise InvalidInput(f"artifact path {('/' + rel) if absolute else rel!r} is absolute; give a path relative "
                           "to the run" if absolute else f"the artifact path in {sent!r} has an empty segment ('//')")
    return rel


async def receive_upload(request: Any, tracking: Any, tenant: str, store_path: str | None = None) -> Any:
    """The request body spooled to a temporary file, within ``tenant``'s ``[quotas]`` (see
    :mod:`matih_lite.tracking.quotas`): PayloadTooLarge (413) past ``max_artifact_mb`` -- from the Content-Length
    at once, or as soon as the bytes read pass it -- and QuotaExceeded (507) past ``artifact_quota_gb``. On a
    refusal the spool is discarded: nothing is written. ``store_path`` is the file the upload replaces, if known.
    The caller closes the returned file."""
    import tempfile

    import anyio

    from matih_lite.errors import PayloadTooLarge
    from matih_lite.tracking.quotas import MB, artifact_quota, check_quota

    quota = artifact_quota(tracking.host.config.section("quotas"), tenant)
    limit = quota.max_upload_bytes

    def too_large(size: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"the upload is {size}, over the limit of {limit / MB:g} MB per file "
                               "([quotas] max_artifact_mb)", detail={"limit_bytes": limit})

    declared = request.headers.get("content-length")
    if limit is not None and declared and declared.isdigit() and int(declared) > limit:
        raise too_large(f"{int(declared)} bytes")
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if limit is not None and size > limit:
                raise too_large(f"over {limit} bytes")
            spool.write(chunk)
        await anyio.to_thread.run_sync(lambda: check_quota(tracking.artifacts, tenant, quota, size, store_path))
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool
