"""A real server on 127.0.0.1, on a free port, with the same test-facing API as the memory server."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Unpack

import trio

from .._client import connect
from .._connection import WebSocket
from .._metrics import Metrics
from .._options import (
    ClientOptionKeywords,
    ClientOptions,
    ServerOptionKeywords,
    ServerOptions,
    resolve,
)
from .._server import Handler, Server, serve
from ._http import HttpResponse, http_request
from ._memory import TEST_CLIENT_OPTIONS

__all__ = ["LOOPBACK_HOST", "LoopbackServer", "open_loopback_server"]

LOOPBACK_HOST = "127.0.0.1"

_SERVER_DEFAULTS = ServerOptions()


class LoopbackServer:
    """A running :func:`trionos.serve` on ``127.0.0.1``: ``server.port`` is the port it got."""

    #: Which backend this is (see :class:`~trionos.testing.AppServer`).
    backend = "loopback"

    def __init__(self, server: Server) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<LoopbackServer {self.url} connections={len(self.server.connections)}>"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>`` (``wss://`` when serving TLS)."""
        return self.server.url

    async def dial(self) -> trio.SocketStream:
        """A new TCP connection to the server (for tests that speak HTTP or frames by hand)."""
        return await trio.open_tcp_stream(LOOPBACK_HOST, self.server.port)

    @asynccontextmanager
    async def connect(
        self,
        path: str = "/",
        *,
        ssl_context: ssl.SSLContext | None = None,
        options: ClientOptions | None = None,
        **keywords: Unpack[ClientOptionKeywords],
    ) -> AsyncIterator[WebSocket]:
        """:func:`trionos.connect` to *path*, with client heartbeats off unless one is given.

        Args:
            path: the request target, e.g. ``"/chat?room=a"``.
            ssl_context: the client's TLS settings, for a server started with an ``ssl_context``.
            options: the client's settings (see :class:`~trionos.ClientOptions`), used as they are.
            **keywords: the same settings as keyword arguments, instead of *options*.

        Returns:
            An async context manager yielding the open :class:`~trionos.WebSocket`.

        Raises:
            ConnectionRejected: the server answered the upgrade with an HTTP status (and the
                other errors :func:`trionos.connect` raises).
            TypeError: both *options* and option keywords were given.
        """
        settings = resolve(options, keywords, base=TEST_CLIENT_OPTIONS, caller="connect")
        async with connect(self.url + path, ssl_context=ssl_context, options=settings) as ws:
            yield ws

    async def get(self, path: str = "/", *, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send a plain HTTP ``GET`` *path* over TCP.

        Args:
            path: the request target.
            headers: more request headers.

        Returns:
            The complete response.
        """
        stream = await self.dial()
        return await http_request(stream, f"{LOOPBACK_HOST}:{self.server.port}", path, headers=headers)


@asynccontextmanager
async def open_loopback_server(
    handler: Handler,
    *,
    ssl_context: ssl.SSLContext | None = None,
    options: ServerOptions | None = None,
    metrics: Metrics | None = None,
    **keywords: Unpack[ServerOptionKeywords],
) -> AsyncIterator[LoopbackServer]:
    """Run :func:`trionos.serve` on ``127.0.0.1`` port 0 for the duration of the block.

    Leaving the block cancels ``serve``, which closes open WebSockets with 1001. Real sockets make
    ``MockClock`` autojump unreliable: use the memory backend for virtual time.

    Args:
        handler: the application, as for :func:`trionos.serve`.
        ssl_context: serve TLS with these settings (then :attr:`LoopbackServer.url` says
            ``wss://``).
        options: the server's settings (see :class:`~trionos.ServerOptions`).
        metrics: the counters the server increments (a fresh :class:`~trionos.Metrics` if not
            given).
        **keywords: the settings of :class:`~trionos.ServerOptions` as keyword arguments, instead
            of *options*.

    Returns:
        An async context manager yielding the :class:`LoopbackServer`.

    Raises:
        TypeError: both *options* and option keywords were given, or an unknown keyword.
    """
    start = functools.partial(
        serve,
        0,
        handler,
        host=LOOPBACK_HOST,
        ssl_context=ssl_context,
        options=resolve(options, keywords, base=_SERVER_DEFAULTS, caller="open_loopback_server"),
        metrics=metrics,
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(start)
        try:
            yield LoopbackServer(server)
        finally:
            nursery.cancel_scope.cancel()
