"""The ``webhook`` notifier: each alert POSTed as JSON, signed with HMAC-SHA256, retried with backoff.

Configure it in matih.toml (the secret from the environment, never the file)::

    [notifiers.webhook]
    url = "https://hooks.example.com/matih"
    secret = "${MATIH_WEBHOOK_SECRET}"
    # timeout_seconds = 5, max_attempts = 5, backoff_seconds = 0.5, max_backoff_seconds = 30, headers = {}

The body is the alert as compact JSON with ``delivery_id`` and ``sent_at`` (ms) added. Headers:

- ``X-Matih-Signature: sha256=<hex>``: HMAC-SHA256 of the raw body with ``secret`` (GitHub's
  scheme). Verify with ``hmac.compare_digest(sig, "sha256=" + hmac.new(secret, body, sha256).hexdigest())``
  and reject bodies whose ``sent_at`` is old or whose ``delivery_id`` you have seen (replays).
- ``X-Matih-Event``: the alert's ``type`` (``drift.detected``, ``deployment.canary.rolled_back``).
- ``X-Matih-Delivery``: the delivery id, the same on every retry of one alert.

Delivery: a 2xx answer is success. Connection errors, timeouts, 408, 425, 429 and 5xx are
retried up to ``max_attempts`` in all, waiting ``backoff_seconds * 2**(attempt-1)`` (capped at
``max_backoff_seconds``, with up to 10 % jitter; a ``Retry-After`` in seconds is honoured within
the cap). Any other 4xx is not retried. After the last failure the notifier raises
:class:`~matih_lite.errors.StoreError`; the caller logs it and carries on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from matih_lite.errors import ConfigError, StoreError
from matih_lite.hookspecs import hookimpl

log = logging.getLogger("matih_lite.alerts.webhook")

SIGNATURE_HEADER = "X-Matih-Signature"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_KNOWN = ("url", "secret", "timeout_seconds", "max_attempts", "backoff_seconds", "max_backoff_seconds", "headers")


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Matih-Signature`` value of a body: ``sha256=`` and the hex HMAC-SHA256."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the body's (constant-time), for receivers written in Python."""
    return hmac.compare_digest(sign(secret, body), signature or "")


class WebhookNotifier:
    """POSTs alerts to one URL; see the module docstring for the body, headers and retries."""

    def __init__(self, settings: Mapping[str, Any] | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 transport: Any = None) -> None:
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(_KNOWN))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; settings: {', '.join(_KNOWN)}", key="notifiers.webhook")
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("give url = \"https://...\" for the webhook notifier", key="notifiers.webhook.url")
        self.url = url
        secret = settings.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise ConfigError("secret must be a string (use \"${ENV_VAR}\")", key="notifiers.webhook.secret")
        self.secret = secret or None
        if self.secret is None:
            log.warning("webhook notifier for %s has no secret: its alerts are not signed", url)
        self.timeout = float(settings.get("timeout_seconds", 5.0))
        self.max_attempts = max(1, int(settings.get("max_attempts", 5)))
        self.backoff = float(settings.get("backoff_seconds", 0.5))
        self.max_backoff = float(settings.get("max_backoff_seconds", 30.0))
        self.headers = {str(k): str(v) for k, v in (settings.get("headers") or {}).items()}
        self._sleep = sleep
        self._transport = transport

    def body(self, alert: Mapping[str, Any], delivery_id: str) -> bytes:
        payload = {**alert, "delivery_id": delivery_id, "sent_at": int(time.time() * 1000)}
        return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()

    def notify(self, alert: dict[str, Any]) -> None:
        """Deliver one alert (blocking, retrying). Raises StoreError when every attempt failed."""
        import httpx

        delivery_id = uuid.uuid4().hex
        body = self.body(alert, delivery_id)
        headers = {"Content-Type": "application/json", "User-Agent": "matih-lite-webhook",
                   "X-Matih-Event": str(alert.get("type", "alert")), "X-Matih-Delivery": delivery_id, **self.headers}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        last = ""
        with httpx.Client(timeout=self.timeout, transport=self._transport) as client:
            for attempt in range(1, self.max_attempts + 1):
                retry_after = None
                try:
                    resp = client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if 200 <= resp.status_code < 300:
                        return
                    last = f"HTTP {resp.status_code}"
                    if resp.status_code not in RETRYABLE:
                        raise StoreError(f"webhook {self.url} refused alert {alert.get('type')} ({last}); not retried")
                    retry_after = _seconds(resp.headers.get("Retry-After"))
                if attempt < self.max_attempts:
                    delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                    delay *= 1 + random.random() * 0.1
                    if retry_after is not None:
                        delay = min(self.max_backoff, max(delay, retry_after))
                    log.info("webhook %s: attempt %d failed (%s); retrying in %.2f s", self.url, attempt, last, delay)
                    self._sleep(delay)
        raise StoreError(f"webhook {self.url}: alert {alert.get('type')} not delivered after {self.max_attempts} "
                         f"attempts; last: {last}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@hookimpl
def register_notifiers(register):
    register("webhook", WebhookNotifier)
