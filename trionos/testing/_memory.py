"""In-memory connections: a trionos server and its clients joined by trio memory streams.

Nothing listens on a port, so tests need no sockets and run on a ``MockClock``. The server side
is the real server code path (request parsing, handshake, handler, heartbeat); the client side
is the same :class:`~trionos.WebSocket` class :func:`trionos.connect` returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from .._client import ClientOptions, connect_over
from .._connection import WebSocket
from .._heartbeat import Heartbeat
from .._server import Handler, Server

__all__ = ["MemoryServer", "open_memory_server"]


class MemoryServer:
    """A running in-memory server: connect clients to it with :meth:`connect`.

    ``server`` is the underlying :class:`trionos.Server` (its ``connections`` set is live).
    """

    def __init__(self, server: Server, nursery: trio.Nursery) -> None:
        self.server = server
        self._nursery = nursery

    def open_stream(self) -> trio.abc.Stream:
        """A new raw byte stream to the server (for tests that speak HTTP or frames by hand)."""
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.server.handle_stream, server_stream)
        return client_stream

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
        """Open a WebSocket to ``path``; it closes when the block exits.

        Client heartbeats are off by default here (tests drive time themselves); pass
        ``heartbeat=Heartbeat(...)`` to switch them on.
        """
        client_options = attrs.evolve(
            ClientOptions(),
            subprotocols=tuple(subprotocols),
            extra_headers=tuple(extra_headers),
            heartbeat=heartbeat,
            **options,
        )

        async def open_stream() -> trio.abc.Stream:
            return self.open_stream()

        async with connect_over(open_stream, "trionos.test", path, client_options, remote=None) as ws:
            yield ws


@asynccontextmanager
async def open_memory_server(handler: Handler, **serve_options: Any) -> AsyncIterator[MemoryServer]:
    """Run ``handler`` as a server reachable only through memory streams.

    Takes the same keyword options as :func:`trionos.serve` (``heartbeat``, ``origins``, limits).
    Leaving the block cancels every connection, as cancelling ``serve`` does.
    """
    server = Server(handler, **serve_options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run_pinger)
        try:
            yield MemoryServer(server, nursery)
        finally:
            server.shutdown()
            nursery.cancel_scope.cancel()
