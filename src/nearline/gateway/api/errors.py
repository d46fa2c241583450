"""The gateway renders every error in OpenAI's shape with the one renderer every nearline
HTTP face shares (``nearline.core.http``)."""

from __future__ import annotations

from nearline.core.http import error_response, install_error_handlers

__all__ = ["error_response", "install_error_handlers"]
