"""Heartbeats: protocol pings on a schedule, and the idle deadline that ends a silent connection.

Liveness is judged from inbound bytes only (data frames, pongs, pings: any traffic proves the
peer is alive), measured by the :class:`~trionos._transport.Transport` under the connection. A
server runs one pinger task for all of its connections rather than one sleeping task each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import ConnectionClosed

if TYPE_CHECKING:
    from ._connection import WebSocket

__all__ = ["Heartbeat", "run_pinger", "send_keepalive"]

logger = logging.getLogger("trionos.heartbeat")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"heartbeat {attribute.name} must be a positive number of seconds, got {value!r}")


@attrs.frozen
class Heartbeat:
    """Protocol-level keepalive settings for a connection.

    Every ``interval`` seconds the endpoint sends a WebSocket ping. A connection on which nothing
    arrives for ``timeout`` seconds is considered dead: its handler is cancelled, a close frame
    with code 1011 is attempted without waiting, and the TCP connection is closed at once. Pass
    ``heartbeat=None`` to ``serve``/``connect`` to switch heartbeats off.

    Time spent while the application has not yet taken a received message does not count towards
    the timeout, so a busy handler never makes a healthy peer look dead.
    """

    interval: float = attrs.field(default=30.0, validator=_positive)
    timeout: float = attrs.field(default=60.0, validator=_positive)


async def run_pinger(heartbeat: Heartbeat, connections: Callable[[], Iterable[WebSocket]]) -> None:
    """Ping every connection that ``connections()`` lists, every ``heartbeat.interval`` seconds.

    Runs until cancelled. A ping that does not fit into a full outbox is skipped: that peer is
    not reading, and the idle timeout decides its fate.
    """
    while True:
        await trio.sleep(heartbeat.interval)
        for ws in list(connections()):
            ws.ping_nowait()


async def send_keepalive(ws: WebSocket, interval: float = 25.0, *, text: str = "ping") -> None:
    """Send the text ``text`` every ``interval`` seconds: an application-level heartbeat.

    For servers that expect text pings (browsers cannot send protocol pings, so many servers
    answer a text ``ping`` with ``pong``). Run it in a nursery next to the code that reads the
    connection; it returns when the connection closes, and cancelling it is the way to stop it.
    """
    while True:
        await trio.sleep(interval)
        try:
            await ws.send(text)
        except ConnectionClosed:
            return
