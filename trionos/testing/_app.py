"""One test, two backends: what the memory server and the loopback server both offer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Protocol, Unpack

import trio

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
from ._http import HttpResponse
from ._loopback import open_loopback_server
from ._memory import open_memory_server
from ._pipe import DEFAULT_PIPE_BYTES

__all__ = ["BACKENDS", "AppServer", "Backend", "ClientFactory", "open_app"]

Backend = Literal["memory", "loopback"]
#: Every backend, in the order a test parametrized over all of them runs.
BACKENDS: tuple[Backend, ...] = ("memory", "loopback")

_SERVER_DEFAULTS = ServerOptions()


class AppServer(Protocol):
    """A handle to a running app that tests talk to: :class:`MemoryServer` and
    :class:`LoopbackServer` are two.

    Write tests against this and they run unchanged on either backend.
    """

    #: ``"memory"`` or ``"loopback"``.
    backend: str
    #: The :class:`trionos.Server` running the handler (``connections`` is live).
    server: Server

    @property
    def url(self) -> str:
        """``ws://host[:port]`` of the server."""
        ...

    def connect(
        self,
        path: str = "/",
        *,
        options: ClientOptions | None = None,
        **keywords: Unpack[ClientOptionKeywords],
    ) -> AbstractAsyncContextManager[WebSocket]:
        """Open a WebSocket to *path*; it closes when the block exits.

        Args:
            path: the request target, e.g. ``"/chat?room=a"``.
            options: the client's settings (see :class:`~trionos.ClientOptions`), used as they are.
            **keywords: the same settings as keyword arguments, instead of *options*. Client
                heartbeats are off unless one is given.

        Returns:
            An async context manager yielding the open :class:`~trionos.WebSocket`.
        """
        ...

    async def get(self, path: str = "/", *, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send a plain HTTP ``GET`` *path*.

        Args:
            path: the request target.
            headers: more request headers.

        Returns:
            The complete response.
        """
        ...

    async def dial(self) -> trio.abc.Stream:
        """Open a new raw byte stream to the server (nothing is sent yet).

        Returns:
            The stream; the caller closes it.
        """
        ...


class ClientFactory(Protocol):
    """The ``trionos_client`` fixture: ``ws = await trionos_client(path, **connect_options)``."""

    async def __call__(self, path: str = "/", **options: Any) -> WebSocket:
        """Open a connection that stays open until the test ends."""
        ...


@asynccontextmanager
async def open_app(
    handler: Handler,
    *,
    backend: Backend = "memory",
    buffer_size: int = DEFAULT_PIPE_BYTES,
    options: ServerOptions | None = None,
    metrics: Metrics | None = None,
    **keywords: Unpack[ServerOptionKeywords],
) -> AsyncIterator[AppServer]:
    """Run *handler* on *backend* for the duration of the block.

    Args:
        handler: the application, as for :func:`trionos.serve`.
        backend: ``"memory"`` (:func:`open_memory_server`) or ``"loopback"``
            (:func:`open_loopback_server`).
        buffer_size: bounds each direction of each in-memory connection (the memory backend
            only; loopback has the kernel's buffers).
        options: the server's settings (see :class:`~trionos.ServerOptions`).
        metrics: the counters the server increments (a fresh :class:`~trionos.Metrics` if not
            given).
        **keywords: the settings of :class:`~trionos.ServerOptions` as keyword arguments, instead
            of *options*.

    Returns:
        An async context manager yielding the running app's :class:`AppServer`.

    Raises:
        ValueError: *backend* is not one of :data:`~trionos.testing.BACKENDS`.
        TypeError: both *options* and option keywords were given, or an unknown keyword.
    """
    settings = resolve(options, keywords, base=_SERVER_DEFAULTS, caller="open_app")
    if backend == "memory":
        memory = open_memory_server(handler, buffer_size=buffer_size, options=settings, metrics=metrics)
        async with memory as memory_server:
            yield memory_server
    elif backend == "loopback":
        async with open_loopback_server(handler, options=settings, metrics=metrics) as loopback:
            yield loopback
    else:
        raise ValueError(f"unknown trionos test backend {backend!r}; expected one of {BACKENDS}")
