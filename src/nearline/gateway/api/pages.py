"""The demo chat page and its static files (``src/nearline/static``), served by
``nearline serve`` at ``/`` and ``/chat``; the JavaScript client is ``/static/nearline.js``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from nearline.core.errors import NearlineError

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

router = APIRouter()


class NotFound(NearlineError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


def _static(name: str) -> FileResponse:
    # Only plain files directly in the static folder, by exact name: no path ever escapes it.
    path = STATIC_DIR / name
    media_type = _MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise NotFound(f"no static file named {name!r}")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
@router.get("/chat", include_in_schema=False)
async def chat_page() -> Response:
    return _static("chat.html")


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    return _static(name)
