"""Response classes shared by the routers."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONBody(Response):
    """A JSON response rendered with orjson (the gateway's hot path renders a lot of JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
