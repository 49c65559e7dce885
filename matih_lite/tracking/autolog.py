"""``matih_lite.autolog()``: training code logs itself into the active run (or a new one).

Each framework is an auto-logger contributed through the ``register_autologgers`` hook; the
built-ins (scikit-learn, XGBoost, PyTorch loops) live in :mod:`matih_lite.tracking.autologgers`,
and a plugin can add more. ``autolog()`` enables every registered framework that is importable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("matih_lite.autolog")

_enabled: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()


def autolog(frameworks: list[str] | None = None, *, disable: bool = False) -> list[str]:
    """Turn on auto-logging for ``frameworks`` (default: every installed one); returns those enabled.

    ``disable=True`` undoes the patches instead.
    """
    from matih_lite.host import get_plugin_manager

    with _lock:
        if disable:
            for name in list(frameworks or _enabled):
                undo = _enabled.pop(name, None)
                if undo:
                    undo()
            return []
        registered: dict[str, Any] = {}
        for _plugin, args, kwargs in get_plugin_manager().collect("register_autologgers"):
            name, enable = (list(args) + list(kwargs.values()))[:2]
            registered[name] = enable
        wanted = frameworks or list(registered)
        unknown = [f for f in wanted if f not in registered]
        if unknown:
            from matih_lite.errors import InvalidInput

            raise InvalidInput(f"no auto-logger for {', '.join(unknown)}; available: {', '.join(sorted(registered))}")
        for name in wanted:
            if name in _enabled:
                continue
            try:
                undo = registered[name]()
            except ImportError:
                if frameworks:
                    raise
                continue  # not installed: nothing to patch
            if undo is not None:
                _enabled[name] = undo
                log.info("auto-logging enabled for %s", name)
        return sorted(_enabled)


class _Depth(threading.local):
    value = 0


_depth = _Depth()


def logged_call(framework: str, fn: Callable[[], Any], before: Callable[[], None] | None,
                after: Callable[[Any], None]) -> Any:
    """Run ``fn`` inside the active run (starting one if there is none) and log around it.

    Nested calls (a meta-estimator fitting its parts) log only at the outermost level. A failing
    ``fn`` ends a run we started as FAILED and re-raises; a failure of the logging itself is
    logged and never breaks the user's training.
    """
    import matih_lite as ml

    if _depth.value:
        return fn()
    _depth.value += 1
    started = False
    try:
        if ml.active_run() is None:
            ml.start_run(tags={"matih.autolog": framework})
            started = True
        if before:
            _quietly(before, framework)
        try:
            result = fn()
        except BaseException:
            if started:
                ml.end_run(status="FAILED")
                started = False
            raise
        _quietly(lambda: after(result), framework)
        return result
    finally:
        _depth.value -= 1
        if started:
            ml.end_run()


def _quietly(fn: Callable[[], Any], framework: str) -> None:
    try:
        fn()
    except Exception:
        log.warning("auto-logging for %s failed; training continues", framework, exc_info=True)
