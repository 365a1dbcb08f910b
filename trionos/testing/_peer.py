"""A hand-driven WebSocket client: it does what the test says and nothing else.

A :class:`trionos.WebSocket` client runs a reader task that reads the socket continuously and
answers pings on its own, which is what an application wants and exactly what a fault-injection
test does not. A :class:`RawPeer` has no background task: it reads only inside :meth:`RawPeer.recv`,
answers pings only there (and only if told to), and can stop anywhere, even inside a frame. The
protocol work is wsproto's (a sans-I/O state machine, independent of trionos' own core).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from .._errors import ConnectionClosed, ConnectionRejected, ConnectTimeout, HandshakeError
from .._json import dumps as dumps_json
from ._app import AppServer

__all__ = ["RawPeer", "open_raw_peer"]

_RECEIVE_SIZE = 64 * 1024


class RawPeer:
    """A client WebSocket that only reads, writes and answers pings when the test asks it to.

    ``stream`` is the byte stream under it (a :class:`~trionos.testing.PipeStream` on the memory
    backend: its ``incoming_bytes`` shows how much the server sent that the peer has not read).
    ``pings_received`` counts the server's pings seen by :meth:`recv`, ``pongs_received`` its
    answers to :meth:`ping`. Closing is abrupt by
    default: leaving :func:`open_raw_peer`'s block closes the stream without a closing handshake
    (the server sees 1006); call :meth:`close` first for a clean one.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: WSConnection,
        events: Iterable[Event],
        *,
        answer_pings: bool,
    ) -> None:
        self.stream = stream
        self.answer_pings = answer_pings
        self.pings_received = 0
        self.pongs_received = 0
        self._conn = connection
        self._events: deque[Event] = deque(events)
        # The parts of a message still arriving (only one kind at a time).
        self._text_parts: list[str] = []
        self._byte_parts: list[bytes | bytearray] = []
        self._closed: ConnectionClosed | None = None

    def __repr__(self) -> str:
        state = f"closed {self._closed.code}" if self._closed else "open"
        return f"<RawPeer {state}>"

    def frame(self, message: str | bytes) -> bytes:
        """Encode one complete, masked data frame.

        Args:
            message: ``str`` for a text frame, ``bytes`` for a binary one.

        Returns:
            The frame's bytes (nothing is sent).
        """
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        return self._conn.send(event)

    async def send(self, message: str | bytes) -> None:
        """Send one complete message; waits while the server is not reading (backpressure).

        Args:
            message: ``str`` for a text message, ``bytes`` for a binary one.
        """
        await self.stream.send_all(self.frame(message))

    async def send_json(self, obj: Any) -> None:
        """Send *obj* as compact JSON text, as :meth:`trionos.WebSocket.send_json` does.

        Args:
            obj: a JSON-serialisable value.
        """
        await self.send(dumps_json(obj))

    async def ping(self, payload: bytes = b"") -> None:
        """Send a protocol ping; :meth:`recv` counts the pong in ``pongs_received``.

        Args:
            payload: the ping's payload (at most 125 bytes).
        """
        await self.stream.send_all(self._conn.send(Ping(payload)))

    async def send_bytes(self, data: bytes) -> None:
        """Write raw bytes (partial frames, garbage) straight to the stream.

        Args:
            data: the bytes.
        """
        await self.stream.send_all(data)

    async def recv(self) -> str | bytes:
        """Read until one whole message arrives and return it.

        Pings met on the way are counted and, with ``answer_pings``, answered. A close frame is
        answered. Cancelling loses no message.

        Returns:
            The message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionClosed: a close frame arrived (with its code), or the stream ended without
                one (1006).
        """
        if self._closed is not None:
            raise self._closed
        while True:
            while self._events:
                event = self._events.popleft()
                if isinstance(event, TextMessage):
                    self._text_parts.append(event.data)
                    if event.message_finished:
                        text, self._text_parts = "".join(self._text_parts), []
                        return text
                elif isinstance(event, BytesMessage):
                    self._byte_parts.append(event.data)
                    if event.message_finished:
                        payload, self._byte_parts = b"".join(self._byte_parts), []
                        return payload
                elif isinstance(event, Ping):
                    self.pings_received += 1
                    if self.answer_pings:
                        await self.stream.send_all(self._conn.send(event.response()))
                elif isinstance(event, Pong):
                    self.pongs_received += 1
                elif isinstance(event, CloseConnection):
                    if self._conn.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self.stream.send_all(self._conn.send(event.response()))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    self._closed = ConnectionClosed(event.code, event.reason or "")
                    raise self._closed
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self._conn.receive_data(bytes(data) if data else None)
            self._events.extend(self._conn.events())

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send a close frame and read (discarding messages) until the server's reply, then abort.

        Args:
            code: the close code.
            reason: the close reason.
            timeout: seconds to wait for the server's reply.
        """
        if self._closed is None and self._conn.state is ConnectionState.OPEN:
            await self.stream.send_all(self._conn.send(CloseConnection(code=code, reason=reason)))
            with trio.move_on_after(timeout):
                try:
                    while True:
                        await self.recv()
                except ConnectionClosed:
                    pass
        await self.abort()

    async def abort(self) -> None:
        """Close the stream at once, without a close frame: the server sees code 1006."""
        if self._closed is None:
            self._closed = ConnectionClosed(1006, "closed by the test")
        await trio.aclose_forcefully(self.stream)

    async def disconnect_mid_frame(self, message: str | bytes = "x" * 100) -> None:
        """Send the first half of a message's frame, then close the stream (no close frame).

        Args:
            message: the message whose frame is cut.
        """
        frame = self.frame(message)
        await self.stream.send_all(frame[: max(1, len(frame) // 2)])
        await self.abort()


@asynccontextmanager
async def open_raw_peer(
    app: AppServer,
    path: str = "/",
    *,
    subprotocols: Iterable[str] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
    answer_pings: bool = True,
    connect_timeout: float = 10.0,
) -> AsyncIterator[RawPeer]:
    """Complete a WebSocket handshake with *app* at *path* and yield a :class:`RawPeer`.

    The stream is closed abruptly on exit, whatever the peer's state.

    Args:
        app: the running app (see :class:`~trionos.testing.AppServer`).
        path: the request target.
        subprotocols: the subprotocols offered.
        extra_headers: more ``(name, value)`` headers for the upgrade request.
        answer_pings: whether :meth:`RawPeer.recv` answers the server's pings.
        connect_timeout: seconds the handshake may take.

    Returns:
        An async context manager yielding the :class:`RawPeer`.

    Raises:
        ConnectionRejected: the server answered with an HTTP status.
        ConnectTimeout: the handshake took over *connect_timeout* seconds.
        HandshakeError: the server closed the connection first.
    """
    stream = await app.dial()
    try:
        conn = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=urlsplit(app.url).netloc,
            target=path,
            subprotocols=list(subprotocols),
            extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers],
        )
        with trio.move_on_after(connect_timeout) as timeout:
            leftover = await _handshake(stream, conn, conn.send(request))
        if timeout.cancelled_caught:
            raise ConnectTimeout(f"no WebSocket handshake from {app.url}{path} within {connect_timeout:g} s")
        yield RawPeer(stream, conn, leftover, answer_pings=answer_pings)
    finally:
        await trio.aclose_forcefully(stream)


async def _handshake(stream: trio.abc.Stream, conn: WSConnection, request: bytes) -> list[Event]:
    """Send the upgrade request, read the response; return events that came after the accept."""
    await stream.send_all(request)
    status: int | None = None
    body = b""
    while True:
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            if status is not None:
                raise ConnectionRejected(status, body)
            raise HandshakeError("the server closed the connection during the WebSocket handshake")
        conn.receive_data(bytes(data))
        events = list(conn.events())
        for i, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return events[i + 1 :]
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    raise ConnectionRejected(status)
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    raise ConnectionRejected(status or 0, body)
