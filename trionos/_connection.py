"""The WebSocket connection object, the same class on the server and the client side."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import trio
import trio_websocket

from ._codec import loads_json
from ._errors import ConnectionClosed
from ._frames import OP_CLOSE as _OP_CLOSE
from ._frames import OP_PING, close_payload, encode_frame, message_frame
from ._http import Headers, RequestHead
from ._transport import Transport

__all__ = ["MessageCodec", "WebSocket"]

logger = logging.getLogger("trionos.connection")

T = TypeVar("T")

#: Server frames are not masked, so every server ping is the same bytes.
_SERVER_PING = encode_frame(OP_PING, b"")


class MessageCodec(Protocol[T]):
    """What ``send_message``/``recv_message`` need: :class:`trionos.Codec` is one."""

    def encode(self, message: T) -> str: ...

    def decode(self, data: str | bytes) -> T: ...


def dumps_json(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class WebSocket:
    """An open WebSocket connection.

    Obtained from :meth:`Request.accept` on the server or :func:`trionos.connect` on the client.
    Messages are ``str`` (text frames) or ``bytes`` (binary frames). Iterating with ``async for``
    yields received messages and stops quietly on a normal close (1000, 1001); any other close
    raises :class:`ConnectionClosed`.

    Bounds: at most ``max_message_size`` bytes per received message (a larger one closes the
    connection with 1009); outgoing data waits in ``send`` while the socket is full, so a sender
    feels the peer's backpressure. Objects are hashable by identity and carry a unique ``id``.
    """

    # One per open connection, held for its whole life: slots keep it small.
    __slots__ = (
        "_answer_text_ping",
        "_close_timeout",
        "_is_client",
        "_local_close",
        "_path",
        "_request_head",
        "_transport",
        "_ws",
        "id",
        "remote",
    )

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        transport: Transport,
        *,
        is_client: bool,
        path: str | None,
        remote: tuple[str, int] | None,
        request_head: RequestHead | None,
        close_timeout: float,
        answer_text_ping: bool = False,
    ) -> None:
        self._ws = connection
        self._transport = transport
        self._is_client = is_client
        self._close_timeout = close_timeout
        self._answer_text_ping = answer_text_ping
        self._local_close: tuple[int, str] | None = None
        #: A unique, opaque identifier (12 hex digits).
        self.id: str = secrets.token_hex(6)
        self._path = path
        #: The peer's ``(host, port)``, or None for in-memory connections.
        self.remote = remote
        self._request_head = request_head

    def __repr__(self) -> str:
        side = "client" if self._is_client else "server"
        state = f"closed {self.close_code}" if self.closed else "open"
        return f"<trionos.WebSocket {self.id} {side} {self.path!r} {state}>"

    @property
    def path(self) -> str:
        """The request path (server side) or the resource requested (client side)."""
        if self._path is None:
            assert self._request_head is not None
            return self._request_head.path
        return self._path

    @property
    def request_headers(self) -> Headers:
        """The headers of the opening handshake request (server side; empty on the client side)."""
        return Headers() if self._request_head is None else self._request_head.headers

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, if any."""
        return self._ws.subprotocol

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return (
            self._local_close is not None
            or self._ws.closed is not None
            or self._transport.closed
            or self._transport.close_sent
        )

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 for a connection that ended without a close frame)."""
        if self._local_close is not None:
            return self._local_close[0]
        if self._ws.closed is not None:
            return self._ws.closed.code
        return 1006 if self._transport.closed else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed ("" when none was given)."""
        if self._local_close is not None:
            return self._local_close[1]
        if self._ws.closed is not None:
            return self._ws.closed.reason or ""
        return "" if self._transport.closed else None

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason or "")

    # --- receiving ---------------------------------------------------------------------------

    async def recv(self) -> str | bytes:
        """Receive the next message.

        Messages that arrived before the peer closed are still returned; after them this raises
        :class:`ConnectionClosed`. Cancelling ``recv`` loses no message.
        """
        return await self._receive(stop_iteration=False)

    def __aiter__(self) -> WebSocket:
        return self

    def __anext__(self) -> Coroutine[Any, Any, str | bytes]:
        # Not a coroutine of its own: an idle connection waits here for its whole life, and one
        # frame less per connection is memory saved.
        return self._receive(stop_iteration=True)

    async def _receive(self, *, stop_iteration: bool) -> str | bytes:
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed:
                error = self._closed_error()
                if stop_iteration and error.normal:
                    raise StopAsyncIteration from None
                raise error from None
            if self._answer_text_ping and message == "ping":
                await self.send("pong")
                continue
            return message

    async def recv_json(self) -> Any:
        """Receive a message and parse it as JSON; bad JSON raises :class:`DecodeError`."""
        return loads_json(await self.recv())

    async def recv_message(self, codec: MessageCodec[T]) -> T:
        """Receive a message and decode it with ``codec``; bad input raises :class:`DecodeError`.

        The connection stays usable after a :class:`DecodeError`: answer it and read on.
        """
        return codec.decode(await self.recv())

    # --- sending -----------------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Waits while the socket buffer is full. Raises :class:`ConnectionClosed` if the connection
        is closing or closed. A message handed to ``send`` before ``close()`` goes out before the
        close frame.
        """
        await self.send_frame(message_frame(message, masked=self._is_client))

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as compact JSON text."""
        await self.send(dumps_json(obj))

    async def send_message(self, message: T, codec: MessageCodec[T]) -> None:
        """Encode a typed message with ``codec`` and send it as text."""
        await self.send(codec.encode(message))

    async def send_frame(self, frame: bytes) -> None:
        """Send a frame already encoded by :func:`trionos._frames.message_frame` (used by the hub)."""
        if self.closed:
            raise self._closed_error()
        try:
            await self._transport.write(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None

    def ping_nowait(self) -> None:
        """Queue a protocol ping unless the connection is closed or its outbox is full."""
        if self.closed:
            return
        try:
            frame = encode_frame(OP_PING, b"", masked=True) if self._is_client else _SERVER_PING
            self._transport.write_nowait(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # --- closing -----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason``, waiting at most ``close_timeout`` for the peer.

        Messages already handed to ``send`` go out first. Idempotent, and the TCP connection is
        closed even if the caller is cancelled.
        """
        try:
            if self._ws.closed is None and not self._transport.closed:
                with trio.move_on_after(self._close_timeout):
                    await self._ws.aclose(code, reason or None)
        finally:
            await trio.aclose_forcefully(self._transport)

    async def close_without_reply(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (after what is queued) and close at once, not waiting for the reply.

        For a side that is going away anyway, e.g. a client whose task is being cancelled and whose
        reader cannot read a reply any more. Bounded by ``close_timeout``.
        """
        if not self.closed:
            self._local_close = (code, reason)
            frame = encode_frame(_OP_CLOSE, close_payload(code, reason), masked=self._is_client)
            with trio.move_on_after(self._close_timeout):
                try:
                    await self._transport.send_all(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await trio.aclose_forcefully(self._transport)

    def abort(self, code: int, reason: str) -> None:
        """End a connection whose peer cannot be waited for (dead, or not reading).

        Attempts a close frame only if that cannot delay the close (see ``Transport.abort_soon``),
        then closes the connection.
        ``close_code``/``close_reason`` report ``code`` and ``reason``; ``recv`` in other tasks
        raises :class:`ConnectionClosed` with them.
        """
        if self._local_close is not None or self._transport.closed:
            return
        self._local_close = (code, reason)
        goodbye = None
        if self._ws.closed is None:
            goodbye = encode_frame(_OP_CLOSE, close_payload(code, reason), masked=self._is_client)
        self._transport.abort_soon(goodbye)

    async def _release(self) -> None:
        """Once the connection is over: take what trio-websocket still holds, so its reader ends.

        Its reader may be waiting to hand a message nobody will read; the stream is closed by now,
        so after the messages already received it finds the end and closes its channel.
        """
        while True:
            try:
                await self._ws.get_message()
            except trio_websocket.ConnectionClosed:
                return

    def _watch_idle(self, scope: trio.CancelScope, timeout: float) -> None:
        self._transport.watch_idle(scope, timeout)
