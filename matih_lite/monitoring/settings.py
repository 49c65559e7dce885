"""``[drift]`` in matih.toml: windows, tests, thresholds and actions, validated with key paths.

``[drift.models.NAME]`` overrides them for one model and ``[drift.features.NAME]`` picks one
feature's test and threshold. Durations are written ``30m``, ``1h``, ``1d``, ``1w``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from matih_lite.errors import ConfigError, InvalidInput
from matih_lite.monitoring import stats

if TYPE_CHECKING:
    from matih_lite.host import Host


MONITOR_USER = "drift-monitor"
"""Who the drift checks act as (in the history of what they change)."""
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration(text: Any, what: str = "window") -> int:
    """``"30m"``, ``"1h"``, ``"1d"``, ``"1w"`` (or milliseconds as an int) in milliseconds."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = _DURATION.match(str(text)) if isinstance(text, str) else None
    if not match or int(match.group(1)) <= 0:
        raise InvalidInput(f"{what} must be a duration like 30m, 1h or 1d, not {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def format_duration(ms: int) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        if ms % UNITS[unit] == 0:
            return f"{ms // UNITS[unit]}{unit}"
    return f"{ms}ms"


# ---- the settings -----------------------------------------------------------------------------------------
class FeatureSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[drift.features.NAME]``: one feature's test, threshold and kind, or ``ignore = true``."""

    test: str | None = None
    threshold: float | None = None
    kind: str | None = None
    """``numeric`` or ``categorical``, used when the baseline is built."""
    ignore: bool = False


class DriftSettings(msgspec.Struct, forbid_unknown_fields=True):
    """``[drift]`` in matih.toml (every key optional; ``[drift.models.NAME]`` overrides for one model)."""

    windows: list[str] = msgspec.field(default_factory=lambda: ["1h", "1d"])
    """Tumbling windows the scheduler checks."""
    test: str = "auto"
    """The test for every feature: ``auto`` (by data size, as Evidently), or ks, psi, chi2, jensen_shannon,
    wasserstein (or a plugin's)."""
    prediction_test: str = "auto"
    thresholds: dict[str, float] = msgspec.field(default_factory=dict)
    """Per test, e.g. ``{ wasserstein = 0.15, psi = 0.25 }``; a test's own default otherwise."""
    features: dict[str, FeatureSettings] = msgspec.field(default_factory=dict)
    drift_share: float = 0.5
    """Data drift when at least this share of the tested features drift."""
    min_rows: int = 100
    """Windows with fewer rows (for a version) are reported but do not act."""
    small_sample: int = stats.SMALL_SAMPLE
    """``auto`` picks p-value tests (KS, chi-squared) up to this many rows on either side."""
    bins: int = stats.DEFAULT_BINS
    coarse_bins: int = stats.DEFAULT_COARSE_BINS
    sample_cap: int = stats.DEFAULT_SAMPLE_CAP
    max_categories: int = stats.DEFAULT_MAX_CATEGORIES
    performance_threshold: float = 0.05
    """Performance drift when the primary metric (accuracy, rmse) is this much worse, relative to the baseline."""
    min_labels: int = 100
    """Labelled rows needed before performance drift is judged."""
    alerts: bool = True
    health: bool = True
    retrain: bool = False
    retrain_on: list[str] = msgspec.field(default_factory=lambda: ["performance", "data"])
    retrain_cooldown: str = "1d"
    rollback: bool = False
    grace: str = "1m"
    """How long after a window ends the scheduler checks it (late inference-log writes)."""
    catch_up: int = 24
    """After a pause, how many missed windows of each size the scheduler checks (oldest first)."""
    models: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


KNOWN_SIGNALS = ("feature", "data", "concept", "performance")


def drift_settings(config: Any, model: str | None = None) -> DriftSettings:
    """``[drift]`` (with ``[drift.models.MODEL]`` over it) as :class:`DriftSettings`. Raises ConfigError."""
    from matih_lite.config import convert_settings

    raw = config.section("drift") if hasattr(config, "section") else (config or {})
    if not isinstance(raw, Mapping):
        raise ConfigError("expected a table", key="drift")
    settings = convert_settings(_with_model(dict(raw), model), DriftSettings, "drift")
    check_ranges(settings, "drift")
    return settings


def _with_model(data: dict[str, Any], model: str | None) -> dict[str, Any]:
    """``[drift]`` with ``[drift.models.MODEL]`` over it (its features over the defaults' features)."""
    models = data.get("models") or {}
    if model is not None and isinstance(models, Mapping) and isinstance(models.get(model), Mapping):
        override = dict(models[model])
        if "features" in override and isinstance(data.get("features"), Mapping):
            override["features"] = {**data["features"], **override["features"]}
        data.update(override)
    return data


def check_ranges(settings: DriftSettings, key: str) -> None:
    """What the types of :class:`DriftSettings` cannot say. Raises ConfigError with the key path."""
    for w in settings.windows:
        try:
            parse_duration(w)
        except InvalidInput as exc:
            raise ConfigError(exc.message, key=f"{key}.windows") from None
    for name in ("grace", "retrain_cooldown"):
        try:
            parse_duration(getattr(settings, name), name)
        except InvalidInput as exc:
            raise ConfigError(exc.message, key=f"{key}.{name}") from None
    for signal in settings.retrain_on:
        if signal not in KNOWN_SIGNALS:
            raise ConfigError(f"unknown signal {signal!r}; one of {', '.join(KNOWN_SIGNALS)}", key=f"{key}.retrain_on")
    if not 0 < settings.drift_share <= 1:
        raise ConfigError(f"must be in (0, 1], got {settings.drift_share!r}", key=f"{key}.drift_share")
    for name in ("min_rows", "min_labels", "catch_up", "bins", "coarse_bins", "sample_cap", "max_categories",
                 "small_sample"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"must be >= 0, got {getattr(settings, name)!r}", key=f"{key}.{name}")
    for name, fs in settings.features.items():
        if fs.kind is not None and fs.kind not in ("numeric", "categorical"):
            raise ConfigError("kind must be numeric or categorical", key=f"{key}.features.{name}.kind")


def segment(name: str) -> str:
    """A name made safe as one path segment of the artifacts where drift state is kept."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:200] or "model"


def model_setting(config: Any, model: str, key: str) -> Any:
    """``[models.NAME] KEY`` for a model, else ``[models."*"] KEY``, else None."""
    models = config.section("models") or {}
    own = models.get(model) if isinstance(models, Mapping) else None
    default = models.get("*") if isinstance(models, Mapping) else None
    for table in (own, default):
        if isinstance(table, Mapping) and table.get(key):
            return table[key]
    return None


def check_drift(host: Host, settings: DriftSettings) -> list[tuple[str, str]]:
    """What the types of ``[drift]`` cannot say: durations, ranges, signals, and that every test named is
    installed (built in or a plugin's), for the defaults and for each ``[drift.models.NAME]``."""
    import difflib

    from matih_lite.config import convert_settings

    problems: list[tuple[str, str]] = []
    installed = sorted(host.registry("register_drift_tests"))
    base = msgspec.to_builtins(settings)
    for model in [None, *settings.models]:
        where = "drift" if model is None else f"drift.models.{model}"
        try:
            own = settings if model is None else convert_settings(_with_model(dict(base), model), DriftSettings,
                                                                  where)
            check_ranges(own, where)
        except ConfigError as exc:
            problems.append((exc.key or where, exc.reason))
            continue
        named = [("test", own.test), ("prediction_test", own.prediction_test)]
        named += [(f"features.{f}.test", fs.test) for f, fs in own.features.items() if fs.test]
        named += [(f"thresholds.{t}", t) for t in own.thresholds]
        for key, test in named:
            if test == "auto" and not key.startswith("thresholds"):
                continue
            if test not in installed:
                near = difflib.get_close_matches(test, installed, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                problems.append((f"{where}.{key}", f"unknown drift test {test!r}; {hint}installed: auto, "
                                                   f"{', '.join(installed)}"))
    return [p for i, p in enumerate(problems) if p not in problems[:i]]
