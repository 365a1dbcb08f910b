"""Fault injection: the classic ways a WebSocket peer goes wrong, ready to point at an app.

Each works on any :class:`~trionos.testing.AppClient`. On the memory backend they are exact and
need no wall-clock time (with ``autojump_clock``); on loopback they work too, but the kernel's
socket buffers (megabytes) make a slow consumer take much more data before the server notices.

==========================  ===============================================================
fault                       what the server should do about it
==========================  ===============================================================
:func:`slow_consumer`       its sends to the peer wait once the pipe buffer is full; the
                            connection's outbox fills; a hub applies its slow-client policy
                            (``disconnect``: close with 1008 after ``grace`` seconds)
:func:`half_open_peer`      the heartbeat closes it after ``heartbeat.timeout`` seconds
                            (1011 "heartbeat timeout"), and the handler is cancelled
:func:`disconnect_mid_frame`  the handler's ``recv`` raises ``ConnectionClosed`` with 1006
==========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from ._app import AppClient
from ._peer import RawPeer, open_raw_peer

__all__ = ["disconnect_mid_frame", "half_open_peer", "slow_consumer"]


@asynccontextmanager
async def slow_consumer(
    app: AppClient, path: str = "/", *, extra_headers: Iterable[tuple[str, str]] = ()
) -> AsyncIterator[RawPeer]:
    """A peer that completes the handshake and then reads nothing until the test calls ``recv``.

    It may send (``peer.send(...)``, e.g. to join a room); it does not answer pings while it is
    not reading, just as a process that stopped reading its socket would not. The server's writes
    to it fill the connection's buffer (``buffer_size`` on the memory backend; see
    ``peer.stream.incoming_bytes``), then wait. Call ``peer.recv()`` to resume reading. The stream
    is closed abruptly when the block exits.
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers, answer_pings=False) as peer:
        yield peer


@asynccontextmanager
async def half_open_peer(
    app: AppClient, path: str = "/", *, extra_headers: Iterable[tuple[str, str]] = ()
) -> AsyncIterator[RawPeer]:
    """A peer that completes the handshake, then vanishes: it never sends, reads or answers a ping.

    The connection stays open, as a TCP connection to a crashed host or across a dead NAT does:
    only the server's heartbeat can end it (after ``heartbeat.timeout`` seconds of silence). Use
    ``autojump_clock`` and let time pass (``await trio.sleep(61)``) to see it happen at no cost.
    Inside the block, ``await expect_closed(peer, timeout=61)`` reads what the server sent (pings
    are counted in ``peer.pings_received``, not answered) until the server closes: with the 1011
    close frame over TCP, as a bare end of stream (1006) in memory, where a close frame the pipe
    cannot take at once is dropped. The stream is closed abruptly when the block exits.
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers, answer_pings=False) as peer:
        yield peer


async def disconnect_mid_frame(
    app: AppClient,
    path: str = "/",
    *,
    before: Iterable[str | bytes] = (),
    message: str | bytes = "x" * 100,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Connect, send the complete messages in ``before``, then half of ``message``'s frame, and cut.

    The server's reader sees the stream end inside a frame: no close frame, so the handler's
    ``recv`` raises :class:`~trionos.ConnectionClosed` with code 1006 and the connection is
    dropped. Returns once the stream is closed; what the server does next happens in its own
    tasks (wait for it with an event, or ``trio.testing.wait_all_tasks_blocked()``).
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers) as peer:
        for complete in before:
            await peer.send(complete)
        await peer.disconnect_mid_frame(message)
