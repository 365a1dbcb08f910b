"""A bridge for applications built on trio-websocket: their connections in a trionos :class:`Hub`.

``pip install trionos[trio-websocket]``. An application that already serves WebSockets with
trio-websocket keeps its server and its handlers; wrapping each accepted
``trio_websocket.WebSocketConnection`` with :func:`bridge_trio_websocket` gives an object the
hub accepts like a :class:`trionos.WebSocket`, so that connection gets rooms, broadcast (encoded
once), typed messages and heartbeats::

    async def handler(request):
        connection = await request.accept()
        async with trionos.bridge_trio_websocket(connection) as ws, hub.client(ws) as client:
            hub.join(client, "lobby")
            async for message in ws:
                await hub.broadcast("lobby", message)

Everything goes through trio-websocket's public API (``get_message``, ``send_message``,
``ping``, ``aclose``). Broadcast frames reach the connection through a bounded outbox drained by
one writer task per bridged connection (trio-websocket owns the socket, so trionos' direct
socket write does not apply); the hub's slow-client policies work on that outbox as on its own.
See docs/trio-websocket.md for the migration path to :func:`trionos.serve`.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

try:
    import trio_websocket
except ImportError as exc:  # the optional extra is missing: say which one
    raise ImportError(
        f"trionos.bridge_trio_websocket needs trio-websocket: pip install 'trionos[trio-websocket]' ({exc})"
    ) from exc

from ._connection import MessageCodec
from ._errors import ConnectionClosed
from ._frames import OP_BINARY, OP_TEXT, split_frames
from ._heartbeat import Heartbeat
from ._hub_protocols import HubTransport
from ._json import dumps as dumps_json
from ._json import loads as loads_json
from ._metrics import Metrics
from ._transport import ProgressSignal, WriteListener

__all__ = ["BridgedConnectionClosed", "BridgedWebSocket", "bridge_trio_websocket"]

logger = logging.getLogger("trionos.bridge")

T = TypeVar("T")


class _CloseReasonText(str):
    """A close reason that is trionos' (a ``str``) and reads like trio-websocket's ``CloseReason``
    (``.code``, ``.name``, ``.reason``), so code written for either keeps working."""

    code: int

    def __new__(cls, text: str, code: int) -> _CloseReasonText:
        reason = super().__new__(cls, text)
        reason.code = code
        return reason

    @property
    def reason(self) -> str:
        """The close reason's text (trio-websocket's ``CloseReason.reason``)."""
        return str(self)

    @property
    def name(self) -> str:
        """The close code's name (trio-websocket's ``CloseReason.name``), e.g. ``"ABNORMAL_CLOSURE"``."""
        return str(trio_websocket.CloseReason(self.code, None).name)


class BridgedConnectionClosed(ConnectionClosed, trio_websocket.ConnectionClosed):  # type: ignore[misc]
    """A bridged connection is closed: both :exc:`trionos.ConnectionClosed` and
    ``trio_websocket.ConnectionClosed``, so ``except`` clauses written for either catch it.

    ``code`` and ``reason`` are trionos'; ``reason`` also has trio-websocket's ``.code``, ``.name``
    and ``.reason`` (``exc.reason.code == exc.code``). :func:`bridge_trio_websocket` ends its block
    quietly when its own connection's close reaches it, so a handler written as documented never
    ends trio-websocket's server, whatever the close code.

    Args:
        code: the close code (1006 when the connection ended without a closing handshake).
        reason: the close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        ConnectionClosed.__init__(self, code, reason)
        # (trio-websocket's __init__, next in the MRO, stored the message as its reason.)
        self.reason = _CloseReasonText(reason, code)


class _BridgeTransport(ProgressSignal):
    """The hub's view of a bridged connection: a bounded outbox of ready-made frames.

    Implements :class:`~trionos.HubTransport`. There is no socket to write straight into, so
    every broadcast frame is queued here and sent by the connection's writer task.
    """

    __slots__ = (
        "_outbox",
        "_outbox_bytes",
        "_progress",
        "_ready",
        "closed",
        "dropped_frames",
        "max_outbox_bytes",
        "write_listener",
    )

    def __init__(self, max_outbox_bytes: int) -> None:
        self.max_outbox_bytes = max_outbox_bytes
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._progress: trio.Event | None = None
        self._ready = trio.Event()
        self.closed = False
        self.dropped_frames = 0
        self.write_listener: WriteListener | None = None

    @property
    def outbox_bytes(self) -> int:
        """Bytes queued for the writer task."""
        return self._outbox_bytes

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes fit (an empty outbox admits any one frame)."""
        return not self._outbox or self._outbox_bytes + size <= self.max_outbox_bytes

    def _check(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the bridged connection is closed")

    def _enqueue(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._ready.set()

    def write_nowait(self, frame: bytes) -> bool:
        """Queue ``frame``; False (nothing done) when the outbox is full."""
        self._check()
        if not self.has_room(len(frame)):
            return False
        self._enqueue(frame)
        return True

    def write_dropping_oldest(self, frame: bytes) -> int:
        """Queue ``frame``, dropping the oldest queued frames to keep the bound; how many dropped."""
        self._check()
        dropped = 0
        while self._outbox and self._outbox_bytes + len(frame) > self.max_outbox_bytes:
            self._outbox_bytes -= len(self._outbox.popleft())
            dropped += 1
        self.dropped_frames += dropped
        self._enqueue(frame)
        return dropped

    def pop_frame(self) -> bytes | None:
        """The oldest queued frame, taken off the outbox (None when it is empty)."""
        if not self._outbox:
            return None
        frame = self._outbox.popleft()
        self._outbox_bytes -= len(frame)
        self._signal_progress()
        return frame

    async def wait_ready(self) -> None:
        """Return once something was queued since the last call (or the transport closed)."""
        await self._ready.wait()
        self._ready = trio.Event()

    def close(self) -> None:
        """Drop what is queued and refuse more; wake whoever waits."""
        self.closed = True
        self._outbox.clear()
        self._outbox_bytes = 0
        self._signal_progress()
        self._ready.set()


class BridgedWebSocket:
    """A trio-websocket connection as the hub sees a :class:`trionos.WebSocket`.

    ``recv``/``async for``/``send`` and the JSON and typed helpers behave as on a trionos
    WebSocket (:class:`trionos.ConnectionClosed` on close; ``async for`` ends quietly on 1000 and
    1001). ``send`` goes out after the broadcasts queued before it. Obtain one from
    :func:`bridge_trio_websocket`.
    """

    def __init__(self, connection: trio_websocket.WebSocketConnection, max_outbox_bytes: int) -> None:
        self.connection = connection
        self._transport = _BridgeTransport(max_outbox_bytes)
        #: An identifier, unique in practice (12 hex digits), as on a trionos WebSocket.
        self.id: str = secrets.token_hex(6)
        self._send_lock = trio.StrictFIFOLock()
        self._local_close: tuple[int, str] | None = None
        self._abort_requested = trio.Event()

    def __repr__(self) -> str:
        return f"<trionos.bridge.BridgedWebSocket {self.id} {'closed' if self.closed else 'open'}>"

    @property
    def transport(self) -> HubTransport:
        """The outbox the hub queues this connection's broadcasts in."""
        return self._transport

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._local_close is not None or self.connection.closed is not None

    @property
    def close_code(self) -> int | None:
        """The close code once closed."""
        if self._local_close is not None:
            return self._local_close[0]
        reason = self.connection.closed
        return None if reason is None else int(reason.code)

    def _closed_error(self) -> BridgedConnectionClosed:
        if self._local_close is not None:
            return BridgedConnectionClosed(*self._local_close)
        reason = self.connection.closed
        if reason is None:
            return BridgedConnectionClosed(1006, "")
        return BridgedConnectionClosed(int(reason.code), reason.reason or "")

    # --- receiving ---------------------------------------------------------------------------

    async def recv(self) -> str | bytes:
        """Receive the next message.

        Returns:
            The message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        try:
            return await self.connection.get_message()
        except trio_websocket.ConnectionClosed:
            raise self._closed_error() from None

    def __aiter__(self) -> BridgedWebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosed as exc:
            if exc.normal:
                raise StopAsyncIteration from None
            raise

    async def recv_json(self) -> Any:
        """Receive a message and parse it as JSON.

        Returns:
            The parsed value.

        Raises:
            DecodeError: the message is not JSON.
            ConnectionClosed: the connection is closed.
        """
        return loads_json(await self.recv())

    async def recv_message(self, codec: MessageCodec[T]) -> T:
        """Receive a message and decode it with *codec*.

        Args:
            codec: the protocol's codec, e.g. a :class:`~trionos.Codec`.

        Returns:
            The decoded message.

        Raises:
            DecodeError: the message is not one *codec* accepts.
            ConnectionClosed: the connection is closed.
        """
        return codec.decode(await self.recv())

    # --- sending -----------------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send a message after what the hub has queued for this connection.

        Args:
            message: ``str`` for a text message, ``bytes`` for a binary one.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        transport = self._transport
        if self.closed or transport.closed:
            raise self._closed_error()
        if transport.write_listener is not None:
            transport.write_listener.before_write()
        async with self._send_lock:
            await self._drain()
            await self._send_now(message)

    async def send_json(self, obj: Any) -> None:
        """Send *obj* as compact JSON text.

        Args:
            obj: a JSON-serialisable value.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        await self.send(dumps_json(obj))

    async def send_message(self, message: T, codec: MessageCodec[T]) -> None:
        """Encode a typed message with *codec* and send it as text.

        Args:
            message: the message.
            codec: the protocol's codec, e.g. a :class:`~trionos.Codec`.

        Raises:
            EncodeError: *codec* cannot encode *message*.
            ConnectionClosed: the connection is closed.
        """
        await self.send(codec.encode(message))

    async def _send_now(self, message: str | bytes) -> None:
        try:
            await self.connection.send_message(message)
        except trio_websocket.ConnectionClosed:
            self._transport.close()
            raise self._closed_error() from None

    async def _drain(self) -> None:
        """Send the frames the hub queued, in order (called with the send lock held)."""
        transport = self._transport
        while (frame := transport.pop_frame()) is not None:
            # One frame, or several joined by the hub's fan-out; only data frames can go.
            for first, _, payload in split_frames(frame) or ():
                if first == 0x80 | OP_TEXT:
                    await self._send_now(bytes(payload).decode())
                elif first == 0x80 | OP_BINARY:
                    await self._send_now(bytes(payload))

    async def _write_queued(self) -> None:
        """The writer task: sends what the hub queues, until the connection ends."""
        transport = self._transport
        while not transport.closed:
            await transport.wait_ready()
            async with self._send_lock:
                try:
                    await self._drain()
                except ConnectionClosed:
                    return

    def ping_nowait(self) -> None:
        """Nothing to do: :func:`bridge_trio_websocket`'s heartbeat pings through trio-websocket."""

    def abort(self, code: int, reason: str) -> None:
        """End the connection with ``code`` without waiting (the hub's slow-client policy)."""
        if self._local_close is None:
            self._local_close = (code, reason)
            self._transport.close()
            self._abort_requested.set()

    async def _close_on_abort(self, close_timeout: float) -> None:
        await self._abort_requested.wait()
        assert self._local_close is not None
        with trio.move_on_after(close_timeout):
            await self.connection.aclose(*self._local_close)

    async def _heartbeat(self, heartbeat: Heartbeat) -> None:
        """Ping every ``interval``; a peer that sends no pong within ``timeout`` is closed (1011)."""
        while not self.closed:
            await trio.sleep(heartbeat.interval)
            with trio.move_on_after(heartbeat.timeout) as waited:
                try:
                    await self.connection.ping()
                except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
                    return
            if waited.cancelled_caught:
                logger.info("closing %r: no pong for %g s", self, heartbeat.timeout)
                self.abort(1011, f"heartbeat timeout: no pong for {heartbeat.timeout:g} s")
                return


@asynccontextmanager
async def bridge_trio_websocket(
    connection: trio_websocket.WebSocketConnection,
    *,
    heartbeat: Heartbeat | None = Heartbeat(),  # noqa: B008 - frozen, so sharing is safe
    max_outbox_bytes: int = 1024 * 1024,
    close_timeout: float = 5.0,
    metrics: Metrics | None = None,
) -> AsyncIterator[BridgedWebSocket]:
    """Wrap an open trio-websocket connection for a :class:`trionos.Hub` for the block's duration.

    Runs the connection's writer task (and, with a heartbeat, a pinger) in a nursery of its own.
    Leaving the block stops them; closing the connection stays trio-websocket's (its handler
    returns). Cancelling the block cancels the tasks. See ``docs/trio-websocket.md``.

    An isolation boundary: when the block ends with this connection's close
    (:exc:`BridgedConnectionClosed`, or ``trio_websocket.ConnectionClosed`` from the connection
    itself) once it is closed, whatever the code (1006, 1007, 1009, 1011, 4000...), the close is
    logged at INFO and the block ends quietly: ``serve_websocket`` ends the whole server on any
    exception a handler raises, and one client must never end the server.

    Args:
        connection: the open trio-websocket connection.
        heartbeat: ping every ``interval`` seconds and close a peer with no pong for ``timeout``
            seconds with 1011 (see :class:`~trionos.Heartbeat`); ``None`` switches it off.
        max_outbox_bytes: the bytes the hub queues for the connection (1 MiB); beyond it the
            hub's :class:`~trionos.SlowClientPolicy` acts.
        close_timeout: seconds an ``abort`` from the hub may take to close the connection (5).
        metrics: where to count the connection's close when the block ends with it closed, by
            close code (:attr:`Metrics.bridge_closed <trionos.Metrics.bridge_closed>`; pass the
            hub's).

    Returns:
        An async context manager yielding the :class:`~trionos.BridgedWebSocket` to give the hub.
    """
    ws = BridgedWebSocket(connection, max_outbox_bytes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws._write_queued)
        nursery.start_soon(ws._close_on_abort, close_timeout)
        if heartbeat is not None:
            nursery.start_soon(ws._heartbeat, heartbeat)
        try:
            yield ws
        except (ConnectionClosed, trio_websocket.ConnectionClosed) as exc:
            if not ws.closed:
                raise
            logger.info("%r closed: %s", ws, exc)  # this connection's end, not the server's
        finally:
            if metrics is not None and ws.closed:
                metrics.bridge_closed_with(ws.close_code or 1006)
            ws._transport.close()
            nursery.cancel_scope.cancel()
