"""Tenants, users, API tokens and roles: who may call the service, and what they may do.

See :mod:`matih_lite.auth.service` for how tokens are made, stored and checked, and
:func:`required_role` for the role gates.
"""

from matih_lite.auth.service import (
    ROLE_IMPLIES,
    Accounts,
    AuthSettings,
    IssuedToken,
    auth_enabled,
    auth_settings,
    check_allowed,
    effective_roles,
    hash_secret,
    required_role,
)

__all__ = [
    "ROLE_IMPLIES",
    "Accounts",
    "AuthSettings",
    "IssuedToken",
    "auth_enabled",
    "auth_settings",
    "check_allowed",
    "effective_roles",
    "hash_secret",
    "required_role",
]
