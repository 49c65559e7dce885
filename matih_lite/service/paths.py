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
