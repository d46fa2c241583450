"""Who may call the operator's pages: admin calls, ``/metrics``, the dashboard's data.

* ``/admin/*`` needs an admin key (``auth.admin_keys``) whenever admin keys or tenant keys
  are configured or the bind is not loopback; it is open only with auth off on loopback
  (where the drive-by guard, ``origin.py``, still keeps other web pages out).
* ``/admin/keys`` (the key API) always needs an admin key: with none configured it is refused.
* ``/metrics`` and ``/dashboard/data`` need a metrics key (``auth.metrics_keys``) or an
  admin key whenever admin calls need one or metrics keys are configured, unless
  ``auth.public_metrics: true``. A tenant's key is neither: these pages total every tenant.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from nearline.core.errors import AuthenticationFailed
from nearline.gateway.api.state import app_state
from nearline.gateway.tenancy import admin_required, holds_key, metrics_protected


def require_admin(request: HTTPConnection) -> None:
    settings = app_state(request).settings
    if not admin_required(settings):
        return
    if not settings.auth.admin_keys:
        raise AuthenticationFailed(
            "admin calls need an admin API key and none is configured: add auth.admin_keys"
        )
    if not holds_key(request.headers.get("authorization"), settings.auth.admin_keys):
        raise AuthenticationFailed("an admin API key is required")


def require_admin_key(request: HTTPConnection) -> None:
    """An admin key, whatever the bind: the key API hands out keys."""
    settings = app_state(request).settings
    if not settings.auth.admin_keys:
        raise AuthenticationFailed(
            "the key API needs an admin API key and none is configured: add auth.admin_keys"
        )
    if not holds_key(request.headers.get("authorization"), settings.auth.admin_keys):
        raise AuthenticationFailed("an admin API key is required")


def require_metrics_reader(request: HTTPConnection) -> None:
    settings = app_state(request).settings
    if not metrics_protected(settings):
        return
    allowed = [*settings.auth.metrics_keys, *settings.auth.admin_keys]
    if not holds_key(request.headers.get("authorization"), allowed):
        raise AuthenticationFailed(
            "a metrics or admin API key is required (auth.metrics_keys, auth.admin_keys)"
        )
