"""Response classes shared by the routers."""

from __future__ import annotations

from nearline.core.http import JSONBody

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

__all__ = ["SSE_HEADERS", "JSONBody"]
