"""Routing a deployment's traffic: names, weighted splits, sticky buckets, and the primary version.

A split is ``VERSION=PERCENT`` pairs adding up to 100 (``3=90,4=10``). Each request is routed to
one variant by weight: with a request key (a user id) the key's hash picks a bucket out of
:data:`BUCKETS` and the same key always meets the same variant; without one a random draw does.
A canary's candidate holds the lowest buckets, so stepping it up only moves keys from the primary
to the candidate.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from matih_lite.contracts.deployments import Deployment, Route
from matih_lite.contracts.stream_jobs import BUCKETS as _BUCKETS
from matih_lite.contracts.stream_jobs import sticky_bucket
from matih_lite.errors import InvalidInput, NotFound

BUCKETS = _BUCKETS
"""Sticky routing resolution: weights are honoured to 0.01 %."""
MAX_NAME = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT_ITEM = re.compile(r"^\s*(\d+)\s*=\s*(\d+(?:\.\d+)?)\s*%?\s*$")


# ---- names and splits ------------------------------------------------------------------------
def check_deployment_name(name: Any) -> str:
    """A deployment name: it is also the OIP model name and a URL segment, so letters, digits, ``. _ -``."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("deployment name must be a non-empty string")
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise InvalidInput(f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' (at most "
                           f"{MAX_NAME}, starting with a letter or digit)")
    return name


def variant_name(version: int) -> str:
    return f"v{version}"


def parse_split(split: Any) -> list[Route]:
    """``"3=90,4=10"`` (or ``{3: 90, 4: 10}``) as routes; weights are percents that add up to 100.

    Raises InvalidInput naming the part at fault.
    """
    if isinstance(split, Mapping):
        items = [(k, v) for k, v in split.items()]
    elif isinstance(split, str):
        items = []
        for part in split.split(","):
            match = _SPLIT_ITEM.match(part)
            if not match:
                raise InvalidInput(f"split: {part.strip()!r} is not VERSION=PERCENT; write e.g. 3=90,4=10")
            items.append((match.group(1), match.group(2)))
    else:
        raise InvalidInput("split must be VERSION=PERCENT pairs, e.g. '3=90,4=10'")
    routes: list[Route] = []
    for version, weight in items:
        number = version_number(version, "split")
        try:
            percent = float(weight)
        except (TypeError, ValueError):
            raise InvalidInput(f"split: weight of version {number} must be a number, got {weight!r}") from None
        if not math.isfinite(percent) or percent < 0 or percent > 100:
            raise InvalidInput(f"split: weight of version {number} must be between 0 and 100, got {weight!r}")
        if any(r.version == number for r in routes):
            raise InvalidInput(f"split: version {number} is listed twice")
        routes.append(Route(variant_name(number), number, percent))
    check_routes(routes, "split")
    return routes


def check_routes(routes: Sequence[Route], what: str = "routes") -> None:
    if not routes:
        raise InvalidInput(f"{what}: give at least one VERSION=PERCENT")
    total = sum(r.weight for r in routes)
    if abs(total - 100.0) > 1e-6:
        raise InvalidInput(f"{what}: weights add up to {total:g}, not 100")


def bucket_of(deployment: str, key: str) -> int:
    """The sticky bucket (0..9999) of a request key in a deployment: the same key, the same bucket (the
    contract's hash, which a job outside the service routes with too)."""
    return sticky_bucket(deployment, key)


class TrafficSplit:
    """Routes of one deployment as bucket boundaries: ``choose`` is a bisect, no allocation."""

    __slots__ = ("_bounds", "deployment", "routes")

    def __init__(self, deployment: str, routes: Sequence[Route]) -> None:
        self.deployment = deployment
        self.routes = [r for r in routes if r.weight > 0]
        bounds, total = [], 0.0
        for r in self.routes:
            total += r.weight
            bounds.append(round(total * BUCKETS / 100))
        if bounds:
            bounds[-1] = BUCKETS
        self._bounds = bounds

    def choose(self, key: str | None = None) -> Route:
        """The route for a request: by the key's bucket when there is a key, else at random."""
        if not self.routes:
            raise NotFound(f"deployment {self.deployment!r} routes no traffic")
        if len(self.routes) == 1:
            return self.routes[0]
        b = bucket_of(self.deployment, key) if key is not None else random.randrange(BUCKETS)
        return self.routes[bisect.bisect_right(self._bounds, b)]


def primary_version(d: Deployment) -> int | None:
    """The version the deployment mainly serves: the canary's primary while one runs, else the heaviest route."""
    if d.canary is not None and d.canary.status == "running":
        return d.canary.primary
    live = [r for r in d.routes if r.weight > 0]
    return max(live, key=lambda r: r.weight).version if live else None


def canary_routes(candidate: int, primary: int | None, percent: float) -> list[Route]:
    # The candidate first: it holds the lowest buckets, so growing it moves keys one way only.
    routes = [Route(variant_name(candidate), candidate, percent)]
    if primary is not None and percent < 100:
        routes.append(Route(variant_name(primary), primary, 100.0 - percent))
    return routes


def route_dicts(routes: Sequence[Route]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(r) for r in routes]


def difference(before: Deployment, after: Deployment) -> dict[str, Any]:
    """``{field: {"before": x, "after": y}}`` for the fields a change touched (the history's detail)."""
    out: dict[str, Any] = {}
    for name in ("target", "follows", "routes", "shadows", "use_canary", "policy", "status", "description", "canary"):
        a, b = msgspec.to_builtins(getattr(before, name)), msgspec.to_builtins(getattr(after, name))
        if a != b:
            out[name] = {"before": a, "after": b}
    return out


def version_number(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}")
    try:
        number = int(str(value).strip().lstrip("vV"))
    except (TypeError, ValueError):
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}") from None
    if number < 1:
        raise InvalidInput(f"{what}: version must be a positive integer, got {value!r}")
    return number
