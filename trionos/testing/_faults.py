"""Fault injection: the classic ways a WebSocket peer goes wrong, ready to point at an app.

Each works on any :class:`~trionos.testing.AppServer`. On the memory backend they are exact and
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
:func:`open_cutting_proxy`  a TCP proxy whose ``cut()`` drops every connection through it
                            mid-conversation (no close frame, both ends see 1006) while the
                            server stays up: test a client's reconnection and recovery
==========================  ===============================================================
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from ._app import AppServer
from ._peer import RawPeer, open_raw_peer

__all__ = ["CuttingProxy", "disconnect_mid_frame", "half_open_peer", "open_cutting_proxy", "slow_consumer"]

logger = logging.getLogger("trionos.testing.faults")

_CHUNK = 64 * 1024


@asynccontextmanager
async def slow_consumer(
    app: AppServer, path: str = "/", *, extra_headers: Iterable[tuple[str, str]] = ()
) -> AsyncIterator[RawPeer]:
    """A peer that completes the handshake and then reads nothing until the test calls ``recv``.

    It may send (``peer.send(...)``, e.g. to join a room); it does not answer pings while it is
    not reading, just as a process that stopped reading its socket would not. The server's writes
    to it fill the connection's buffer (``buffer_size`` on the memory backend; see
    ``peer.stream.incoming_bytes``), then wait. Call ``peer.recv()`` to resume reading. The stream
    is closed abruptly when the block exits.

    Args:
        app: the app to connect to.
        path: the path of the WebSocket endpoint.
        extra_headers: more handshake headers.

    Yields:
        The :class:`~trionos.testing.RawPeer`.

    Raises:
        ~trionos.ConnectionRejected: the server refuses the handshake.
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers, answer_pings=False) as peer:
        yield peer


@asynccontextmanager
async def half_open_peer(
    app: AppServer, path: str = "/", *, extra_headers: Iterable[tuple[str, str]] = ()
) -> AsyncIterator[RawPeer]:
    """A peer that completes the handshake, then vanishes: it never sends, reads or answers a ping.

    The connection stays open, as a TCP connection to a crashed host or across a dead NAT does:
    only the server's heartbeat can end it (after ``heartbeat.timeout`` seconds of silence). Use
    ``autojump_clock`` and let time pass (``await trio.sleep(61)``) to see it happen at no cost.
    Inside the block, ``await expect_closed(peer, timeout=61)`` reads what the server sent (pings
    are counted in ``peer.pings_received``, not answered) until the server closes: with the 1011
    close frame over TCP, as a bare end of stream (1006) in memory, where a close frame the pipe
    cannot take at once is dropped. The stream is closed abruptly when the block exits.

    Args:
        app: the app to connect to.
        path: the path of the WebSocket endpoint.
        extra_headers: more handshake headers.

    Yields:
        The :class:`~trionos.testing.RawPeer`.

    Raises:
        ~trionos.ConnectionRejected: the server refuses the handshake.
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers, answer_pings=False) as peer:
        yield peer


async def disconnect_mid_frame(
    app: AppServer,
    path: str = "/",
    *,
    before: Iterable[str | bytes] = (),
    message: str | bytes = "x" * 100,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Connect, send the complete messages in *before*, then half of *message*'s frame, and cut.

    The server's reader sees the stream end inside a frame: no close frame, so the handler's
    ``recv`` raises :class:`~trionos.ConnectionClosed` with code 1006 and the connection is
    dropped. Returns once the stream is closed; what the server does next happens in its own
    tasks (wait for it with an event, or ``trio.testing.wait_all_tasks_blocked()``).

    Args:
        app: the app to connect to.
        path: the path of the WebSocket endpoint.
        before: complete messages to send first.
        message: the message whose frame is cut in half.
        extra_headers: more handshake headers.

    Raises:
        ~trionos.ConnectionRejected: the server refuses the handshake.
    """
    async with open_raw_peer(app, path, extra_headers=extra_headers) as peer:
        for complete in before:
            await peer.send(complete)
        await peer.disconnect_mid_frame(message)


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server: what :func:`open_cutting_proxy` yields.

    Point a client (or a browser) at :attr:`url` instead of the server. :meth:`cut` drops every
    connection open through the proxy at once; new connections are accepted as before, so a
    reconnecting client finds the server again. While :attr:`refusing` is True, new connections
    are closed as soon as they arrive (the server looks unreachable).

    Args:
        host: the server's host.
        port: the server's port.
        patience: how long a new connection waits for the server to accept (retrying every
            20 ms), as behind a load balancer during a restart; 0 (the default) closes it at
            once when the server is down.
    """

    def __init__(self, host: str, port: int, *, patience: float = 0.0) -> None:
        self.target = (host, port)
        self.patience = patience
        #: The port the proxy listens on (127.0.0.1), known once the proxy is open.
        self.port = 0
        #: Close new connections at once instead of forwarding them.
        self.refusing = False
        #: Connections forwarded so far.
        self.connections = 0
        #: Connections dropped by :meth:`cut` so far.
        self.cut_count = 0
        self._open: set[trio.CancelScope] = set()

    def __repr__(self) -> str:
        return f"<trionos.testing.CuttingProxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}>"

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``: the server's WebSocket URL through the proxy (add the path)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._open)

    def cut(self) -> int:
        """Drop every open connection now, without a close frame. Never awaits.

        Both sockets are closed (the peers read an end of stream, not a WebSocket close), so the
        client sees code 1006 and the server's handler ends as for a vanished client.

        Returns:
            How many connections were dropped.
        """
        scopes = list(self._open)
        for scope in scopes:
            scope.cancel()
        self.cut_count += len(scopes)
        return len(scopes)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        """Forward one connection until either side ends or :meth:`cut` drops it."""
        if self.refusing:
            await downstream.aclose()
            return
        self.connections += 1
        with trio.CancelScope() as scope:
            self._open.add(scope)
            try:
                async with downstream, await self._dial() as upstream:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_pump, downstream, upstream, nursery.cancel_scope)
                        nursery.start_soon(_pump, upstream, downstream, nursery.cancel_scope)
            except OSError as exc:  # the server is down: the client sees its connection close
                logger.info("cutting proxy: cannot reach %s:%d: %s", *self.target, exc)
            finally:
                self._open.discard(scope)

    async def _dial(self) -> trio.SocketStream:
        with trio.move_on_after(self.patience):
            while True:
                try:
                    return await trio.open_tcp_stream(*self.target)
                except OSError:
                    await trio.sleep(0.02)
        return await trio.open_tcp_stream(*self.target)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    """Copy bytes one way until either side ends, then end the pair."""
    try:
        while data := await source.receive_some(_CHUNK):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def open_cutting_proxy(
    port: int, *, host: str = "127.0.0.1", patience: float = 0.0
) -> AsyncIterator[CuttingProxy]:
    """Run a :class:`CuttingProxy` to ``host:port`` for the block; it listens on 127.0.0.1, port 0.

    Leaving the block (or cancelling it) closes the listener and every connection through it.

    Args:
        port: the server's port.
        host: the server's host.
        patience: see :class:`CuttingProxy`.

    Yields:
        The proxy, listening.
    """
    proxy = CuttingProxy(host, port, patience=patience)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
