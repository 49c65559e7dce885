"""The error types every layer raises; the CLI and the service turn them into one line or a problem.

Each error carries the HTTP status it maps to and a message written for the user:
what went wrong and, where we know it, what to do about it.
"""

from __future__ import annotations


class MatihError(Exception):
    """Base of every error matih-lite raises on purpose."""

    status: int = 500
    title: str = "Internal error"
    exit_code: int = 1

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class InvalidInput(MatihError):
    """The caller sent something malformed: a bad value, an unknown field, a path that escapes."""

    status = 400
    title = "Invalid input"
    exit_code = 2


class NotFound(MatihError):
    status = 404
    title = "Not found"


class Conflict(MatihError):
    """The request contradicts what is stored (a duplicate name, a param rewritten, a finished run)."""

    status = 409
    title = "Conflict"


class Unauthorized(MatihError):
    status = 401
    title = "Unauthorized"


class Forbidden(MatihError):
    status = 403
    title = "Forbidden"


class GovernanceRefused(MatihError):
    """A promotion that the model's policy does not allow; ``detail['unmet']`` lists why."""

    status = 422
    title = "Refused by governance policy"


class TrafficRefused(GovernanceRefused):
    """Live traffic routed to a version the policy does not let serve (``[governance] serve_stages``);
    ``detail['rule']`` names the rule."""

    exit_code = 2


class PayloadTooLarge(MatihError):
    """An upload past the per-upload limit (``[quotas] max_artifact_mb``); nothing of it is kept."""

    status = 413
    title = "Payload too large"
    exit_code = 2


class QuotaExceeded(MatihError):
    """A write that would take the tenant past its storage quota (``[quotas] artifact_quota_gb``)."""

    status = 507
    title = "Insufficient storage"
    exit_code = 2


class ConfigError(MatihError):
    """matih.toml (or the environment it reads) is wrong; ``key`` is the dotted path at fault."""

    status = 500
    title = "Configuration error"
    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, detail: dict | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message, detail=detail)
        self.key = key
        self.reason = message


class PluginError(ConfigError):
    """A plugin failed to load, two plugins claim one backend, or a backend is not installed."""

    title = "Plugin error"


class StoreError(MatihError):
    """A backend's driver failed (disk full, connection refused, corrupt file)."""

    status = 503
    title = "Backend unavailable"
    retry_after: int | None = 5
    """Seconds a client should wait before retrying (the ``Retry-After`` header); the backend may recover."""
