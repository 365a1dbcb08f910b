"""One test, two backends: what the memory server and the loopback server both offer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, Protocol

import trio

from .._connection import WebSocket
from .._heartbeat import Heartbeat
from .._server import Handler, Server
from ._http import HttpResponse
from ._loopback import open_loopback_server
from ._memory import open_memory_server
from ._pipe import DEFAULT_PIPE_BYTES

__all__ = ["BACKENDS", "AppClient", "Backend", "ClientFactory", "open_app"]

Backend = Literal["memory", "loopback"]
#: Every backend, in the order a test parametrized over all of them runs.
BACKENDS: tuple[Backend, ...] = ("memory", "loopback")


class AppClient(Protocol):
    """A running app that tests talk to: :class:`MemoryServer` and :class:`LoopbackServer` are two.

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
        subprotocols: Iterable[str] = (),
        extra_headers: Iterable[tuple[str, str]] = (),
        heartbeat: Heartbeat | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[WebSocket]:
        """Open a WebSocket to ``path`` (client heartbeats off unless given); closed on exit."""
        ...

    async def get(self, path: str = "/", *, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """A plain HTTP ``GET``; the complete response."""
        ...

    async def dial(self) -> trio.abc.Stream:
        """A new raw byte stream to the server: nothing is sent yet."""
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
    **serve_options: Any,
) -> AsyncIterator[AppClient]:
    """Run ``handler`` on ``backend`` for the duration of the block and yield its :class:`AppClient`.

    ``serve_options`` are those of :func:`trionos.serve`. ``buffer_size`` bounds each direction of
    each in-memory connection (the memory backend only; loopback has the kernel's buffers).
    """
    if backend == "memory":
        async with open_memory_server(handler, buffer_size=buffer_size, **serve_options) as memory:
            yield memory
    elif backend == "loopback":
        async with open_loopback_server(handler, **serve_options) as loopback:
            yield loopback
    else:
        raise ValueError(f"unknown trionos test backend {backend!r}; expected one of {BACKENDS}")
