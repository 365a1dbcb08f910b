"""Heartbeats: protocol pings on a schedule, and the idle deadline that ends a silent connection.

Liveness is judged from inbound bytes only (data frames, pongs, pings: any traffic proves the peer
is alive): every read keeps the connection's idle deadline at least ``timeout`` seconds ahead
(moving it only when it has fallen short, then 0.25 s further, so a silent peer is cut within
``timeout`` + 0.25 s), whatever the handler and the outbox are doing. An endpoint runs one *keeper*
task for all of its connections rather than one sleeping task each: it pings on the heartbeat
schedule, and on every tick starts a servicer for each connection nobody has received on since the
previous tick, so that a connection whose handler does not read still answers pings, notices a close
and sees its peer's traffic (see :mod:`trionos._connection`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from ._errors import ConnectionClosed
from ._options import Heartbeat

if TYPE_CHECKING:
    from ._connection import WebSocket

__all__ = ["SERVICE_TICK", "Heartbeat", "run_keeper", "send_keepalive", "service_tick"]

logger = logging.getLogger("trionos.heartbeat")


#: The longest a connection nobody receives on waits for a servicer: between one and two ticks.
SERVICE_TICK = 1.0


def service_tick(heartbeat: Heartbeat | None) -> float:
    """How often the keeper looks at its connections.

    Args:
        heartbeat: the endpoint's heartbeat, or None.

    Returns:
        Seconds between looks: :data:`SERVICE_TICK`, or less for a short heartbeat (its interval,
        or a quarter of its timeout, whichever is shorter).
    """
    if heartbeat is None:
        return SERVICE_TICK
    return min(SERVICE_TICK, heartbeat.interval, heartbeat.timeout / 4)


async def run_keeper(heartbeat: Heartbeat | None, connections: Callable[[], Iterable[WebSocket]]) -> None:
    """Look after every connection *connections* lists until cancelled.

    Every ``heartbeat.interval`` seconds each is pinged (a ping that does not fit into a full
    outbox is skipped: that peer is not reading, and the idle timeout decides its fate). On every
    tick (:func:`service_tick`), a connection on which nobody has received since the previous
    tick gets a servicer that reads for it.

    Args:
        heartbeat: the ping schedule, or None for no pings (connections are still serviced).
        connections: returns the connections to look after, called on every tick.
    """
    tick = service_tick(heartbeat)
    next_ping = math.inf if heartbeat is None else trio.current_time() + heartbeat.interval
    while True:
        await trio.sleep(tick)
        ping = trio.current_time() >= next_ping
        if ping:
            assert heartbeat is not None
            next_ping += heartbeat.interval
        for ws in list(connections()):
            ws._keep()
            if ping:
                ws.ping_nowait()


async def send_keepalive(ws: WebSocket, interval: float = 25.0, *, text: str = "ping") -> None:
    """Send the text *text* every *interval* seconds: an application-level heartbeat.

    For servers that expect text pings (browsers cannot send protocol pings, so many servers
    answer a text ``ping`` with ``pong``). Run it in a nursery next to the code that reads the
    connection; it returns when the connection closes, and cancelling it is the way to stop it.

    Args:
        ws: the connection.
        interval: seconds between messages.
        text: the message to send.
    """
    while True:
        await trio.sleep(interval)
        try:
            await ws.send(text)
        except ConnectionClosed:
            return
