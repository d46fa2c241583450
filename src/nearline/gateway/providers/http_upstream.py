"""What every HTTP upstream provider shares: one aiohttp session, its timeouts, its lifecycle."""

from __future__ import annotations

import aiohttp

from nearline.config import HttpProviderSettings


class HttpUpstream:
    """Base of the OpenAI-compatible and Anthropic-format providers."""

    def __init__(self, name: str, settings: HttpProviderSettings) -> None:
        self.name = name
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        self._ensure_session()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._settings.max_connections, ttl_dns_cache=300
                ),
                timeout=self._timeout(None),
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def is_ready(self) -> bool:
        return not self._closed

    def _timeout(self, remaining: float | None) -> aiohttp.ClientTimeout:
        connect, read = self._settings.connect_timeout_s, self._settings.read_timeout_s
        if remaining is None:
            return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        return aiohttp.ClientTimeout(
            total=remaining, sock_connect=min(connect, remaining), sock_read=min(read, remaining)
        )
