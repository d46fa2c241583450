"""An OpenAI-compatible upstream's ``POST {base_url}/embeddings``, for ``/v1/embeddings``.

One pooled ``aiohttp`` session per upstream, opened on first use; the same Bearer key,
timeouts and error translation as its chat calls (timeout → 504, 5xx/reset → 502, 429 →
429 with Retry-After, other 4xx → 400). Vectors are asked as floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from nearline.config import HttpProviderSettings
from nearline.core.errors import (
    NearlineError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from nearline.gateway.telemetry.tracing import propagation_headers


@dataclass(frozen=True, slots=True)
class UpstreamVectors:
    vectors: list[list[float]]
    prompt_tokens: int


class UpstreamEmbeddings:
    def __init__(self, name: str, settings: HttpProviderSettings) -> None:
        self.name = name
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/embeddings"
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._session: aiohttp.ClientSession | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._settings.connect_timeout_s,
                    sock_read=self._settings.read_timeout_s,
                ),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def embed(
        self, inputs: list[Any], upstream_model: str, dimensions: int | None
    ) -> UpstreamVectors:
        payload: dict[str, Any] = {
            "model": upstream_model,
            "input": inputs,
            "encoding_format": "float",
        }
        if dimensions is not None:
            payload["dimensions"] = dimensions
        try:
            async with self._ensure_session().post(
                self._url, data=orjson.dumps(payload), headers=self._headers | propagation_headers()
            ) as response:
                content = await response.read()
                if response.status >= 400:
                    raise _status_error(self.name, response, content)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} timed out embedding") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream {self.name!r} connection failed: {exc}") from exc
        try:
            body = orjson.loads(content)
            rows = sorted(body["data"], key=lambda row: int(row["index"]))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"upstream {self.name!r} sent malformed embeddings") from exc
        if len(vectors) != len(inputs):
            raise UpstreamError(
                f"upstream {self.name!r} sent {len(vectors)} embeddings for {len(inputs)} inputs"
            )
        return UpstreamVectors(vectors, tokens)


def _status_error(name: str, response: aiohttp.ClientResponse, content: bytes) -> NearlineError:
    try:
        message = str(orjson.loads(content)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = content[:200].decode(errors="replace") or (response.reason or "")
    if response.status == 429:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return UpstreamRateLimited(
            f"upstream {name!r} rate limited: {message}", retry_after_s=seconds
        )
    if response.status >= 500:
        return UpstreamError(f"upstream {name!r} answered {response.status}: {message}")
    return UpstreamRejected(
        f"upstream {name!r} rejected the request ({response.status}): {message}"
    )
