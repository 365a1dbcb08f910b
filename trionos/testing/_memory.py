"""In-memory connections: a trionos server and its clients joined by bounded memory pipes.

Nothing listens on a port, so tests need no sockets and run on a ``MockClock``. The server side
is the real server code path (request parsing, handshake, handler, heartbeat); the client side
is the same :class:`~trionos.WebSocket` class :func:`trionos.connect` returns. Each connection is a
:func:`~trionos.testing.memory_pipe` holding at most ``buffer_size`` unread bytes per direction,
so a peer that stops reading pushes back on its writer as a TCP peer would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Unpack

import trio
import trio.lowlevel

from .._client import connect_over
from .._connection import WebSocket
from .._metrics import Metrics
from .._options import (
    ClientOptionKeywords,
    ClientOptions,
    ServerOptionKeywords,
    ServerOptions,
    resolve,
)
from .._server import Handler, Server
from ._http import HttpResponse, http_request
from ._pipe import DEFAULT_PIPE_BYTES, PipeStream, memory_pipe

__all__ = ["MEMORY_HOST", "TEST_CLIENT_OPTIONS", "MemoryServer", "open_memory_server"]

#: The ``Host`` header in-memory clients send.
MEMORY_HOST = "trionos.test"

#: What the test kit's clients use when not told otherwise: the defaults without a heartbeat.
TEST_CLIENT_OPTIONS = ClientOptions(heartbeat=None)


class MemoryServer:
    """A running in-memory server: connect clients to it with :meth:`connect`.

    ``server`` is the underlying :class:`trionos.Server` (its ``connections`` set is live).
    ``buffer_size`` bounds the unread bytes in each direction of each connection.
    """

    #: Which backend this is (see :class:`~trionos.testing.AppServer`).
    backend = "memory"
    #: A pseudo URL: there is no listener, so only this object can connect.
    url = f"ws://{MEMORY_HOST}"

    def __init__(
        self, server: Server, nursery: trio.Nursery, *, buffer_size: int = DEFAULT_PIPE_BYTES
    ) -> None:
        self.server = server
        self.buffer_size = buffer_size
        self._nursery = nursery

    def __repr__(self) -> str:
        return f"<MemoryServer connections={len(self.server.connections)} buffer_size={self.buffer_size}>"

    def open_stream(self) -> PipeStream:
        """A new raw byte stream to the server (for tests that speak HTTP or frames by hand).

        The server starts serving the other end at once; close the stream when done.
        """
        client_stream, server_stream = memory_pipe(self.buffer_size)
        self._nursery.start_soon(self.server.handle_stream, server_stream)
        return client_stream

    async def dial(self) -> PipeStream:
        """Like :meth:`open_stream`, as the awaitable every backend offers."""
        await trio.lowlevel.checkpoint()
        return self.open_stream()

    @asynccontextmanager
    async def connect(
        self,
        path: str = "/",
        *,
        options: ClientOptions | None = None,
        **keywords: Unpack[ClientOptionKeywords],
    ) -> AsyncIterator[WebSocket]:
        """Open a WebSocket to *path*; it closes when the block exits.

        Args:
            path: the request target, e.g. ``"/chat?room=a"``.
            options: the client's settings (see :class:`~trionos.ClientOptions`), used as they are.
            **keywords: the same settings as keyword arguments, instead of *options*. Client
                heartbeats are off unless one is given (tests drive time themselves).

        Returns:
            An async context manager yielding the open :class:`~trionos.WebSocket`.

        Raises:
            ConnectionRejected: the server answered the upgrade with an HTTP status (and the
                other errors :func:`trionos.connect` raises).
            TypeError: both *options* and option keywords were given.
        """
        settings = resolve(options, keywords, base=TEST_CLIENT_OPTIONS, caller="connect")
        async with connect_over(self.dial, MEMORY_HOST, path, settings, remote=None) as ws:
            yield ws

    async def get(self, path: str = "/", *, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send a plain HTTP ``GET`` *path*.

        Args:
            path: the request target.
            headers: more request headers.

        Returns:
            The complete response.
        """
        return await http_request(self.open_stream(), MEMORY_HOST, path, headers=headers)


@asynccontextmanager
async def open_memory_server(
    handler: Handler,
    *,
    buffer_size: int = DEFAULT_PIPE_BYTES,
    options: ServerOptions | None = None,
    metrics: Metrics | None = None,
    **keywords: Unpack[ServerOptionKeywords],
) -> AsyncIterator[MemoryServer]:
    """Run *handler* as a server reachable only through memory pipes.

    Leaving the block cancels every connection, as cancelling :func:`trionos.serve` does: handlers
    are cancelled and open WebSockets get 1001, each waiting at most ``close_timeout`` for its peer.

    Args:
        handler: the application, as for :func:`trionos.serve`.
        buffer_size: the unread bytes each direction of a connection holds before the writer
            waits (64 KiB, roughly a loopback socket).
        options: the server's settings (see :class:`~trionos.ServerOptions`).
        metrics: the counters the server increments (a fresh :class:`~trionos.Metrics` if not
            given).
        **keywords: the settings of :class:`~trionos.ServerOptions` as keyword arguments, instead
            of *options*.

    Returns:
        An async context manager yielding the :class:`MemoryServer`.

    Raises:
        TypeError: both *options* and option keywords were given, or an unknown keyword.
    """
    server = Server(handler, options=options, metrics=metrics, **keywords)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_support)
        nursery.start_soon(server.run_pinger)
        try:
            yield MemoryServer(server, nursery, buffer_size=buffer_size)
        finally:
            server.shutdown()
            nursery.cancel_scope.cancel()
