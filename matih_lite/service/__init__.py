"""The ml-service: a Litestar app over a :class:`~matih_lite.host.Host`, one controller module per domain."""

from matih_lite.service.app import create_app

__all__ = ["create_app"]
