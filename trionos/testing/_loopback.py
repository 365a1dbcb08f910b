"""A real server on 127.0.0.1, on a free port, with the same test-facing API as the memory server."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._client import connect
from .._connection import WebSocket
from .._heartbeat import Heartbeat
from .._server import Handler, Server, serve
from ._http import HttpResponse, http_request

__all__ = ["LOOPBACK_HOST", "LoopbackServer", "open_loopback_server"]

LOOPBACK_HOST = "127.0.0.1"


class LoopbackServer:
    """A running :func:`trionos.serve` on ``127.0.0.1``: ``server.port`` is the port it got."""

    #: Which backend this is (see :class:`~trionos.testing.AppClient`).
    backend = "loopback"

    def __init__(self, server: Server) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<LoopbackServer {self.url} connections={len(self.server.connections)}>"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``."""
        return self.server.url

    async def dial(self) -> trio.SocketStream:
        """A new TCP connection to the server (for tests that speak HTTP or frames by hand)."""
        return await trio.open_tcp_stream(LOOPBACK_HOST, self.server.port)

    @asynccontextmanager
    async def connect(
        self,
        path: str = "/",
        *,
        subprotocols: Iterable[str] = (),
        extra_headers: Iterable[tuple[str, str]] = (),
        heartbeat: Heartbeat | None = None,
        **options: Any,
    ) -> AsyncIterator[WebSocket]:
        """:func:`trionos.connect` to ``path``, with client heartbeats off unless ``heartbeat`` is given."""
        async with connect(
            self.url + path,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            heartbeat=heartbeat,
            **options,
        ) as ws:
            yield ws

    async def get(self, path: str = "/", *, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send a plain HTTP ``GET path`` over TCP and return the complete response."""
        stream = await self.dial()
        return await http_request(stream, f"{LOOPBACK_HOST}:{self.server.port}", path, headers=headers)


@asynccontextmanager
async def open_loopback_server(handler: Handler, **serve_options: Any) -> AsyncIterator[LoopbackServer]:
    """Run :func:`trionos.serve` on ``127.0.0.1`` port 0 for the duration of the block.

    Takes the keyword options of :func:`trionos.serve`. Leaving the block cancels ``serve``, which
    closes open WebSockets with 1001. Real sockets make ``MockClock`` autojump unreliable: use the
    memory backend for virtual time.
    """
    async with trio.open_nursery() as nursery:
        start = functools.partial(serve, 0, handler, host=LOOPBACK_HOST, **serve_options)
        server: Server = await nursery.start(start)
        try:
            yield LoopbackServer(server)
        finally:
            nursery.cancel_scope.cancel()
