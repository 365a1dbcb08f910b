"""Where a server's connections run their background tasks: one shared, shielded nursery.

A WebSocket the server accepts has no task of its own besides its handler's. Some need one for a
while: the transport's outbox writer behind a full socket, a forced close, or a servicer that
reads for a handler that is not receiving (:mod:`._connection`). They could each live in a
nursery of their own connection, but a nursery costs about 1.3 KB, held by every idle
connection for its whole life. So they run in one nursery per server instead, which

* is shielded: cancelling the server leaves them alive for the closing handshakes that
  :meth:`Server.shutdown` starts, and ends only after the last connection has ended;
* isolates its tasks: :class:`SupportNursery` runs each one so that an exception is logged and
  ends that task only, never the server or another connection.

A connection's tasks still end with it: closing its stream ends the servicer and the writer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

#: What a task is started from.
AsyncFn = Callable[..., Awaitable[object]]

__all__ = ["SupportNursery", "TaskSpawner"]

logger = logging.getLogger("trionos.server")


class TaskSpawner(Protocol):
    """Anything with ``start_soon``: a :class:`trio.Nursery`, or a :class:`SupportNursery`."""

    def start_soon(self, async_fn: AsyncFn, *args: object, name: object = None) -> None:
        """Start ``async_fn(*args)`` as a new task (see :meth:`trio.Nursery.start_soon`)."""


async def _isolated(async_fn: AsyncFn, args: tuple[Any, ...]) -> None:
    try:
        await async_fn(*args)
    except Exception:  # one connection's failure must not end the others (an isolation boundary)
        logger.exception("a connection's background task %r failed", async_fn)


class SupportNursery:
    """Starts tasks in a shared nursery, each isolated from the others (see the module docstring)."""

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, async_fn: AsyncFn, *args: object, name: object = None) -> None:
        """Start ``async_fn(*args)``; an exception it raises is logged, not propagated.

        Args:
            async_fn: the task's function.
            *args: its arguments.
            name: the task's name (default: *async_fn*).
        """
        self._nursery.start_soon(_isolated, async_fn, args, name=name or async_fn)
