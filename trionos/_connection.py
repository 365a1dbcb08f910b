"""The WebSocket connection: one class for the server, the client and the test kit.

Frames are parsed by websockets' Sans-I/O core (:class:`websockets.protocol.Protocol`, driven in
its open state after the opening handshake); this module only moves bytes between it and the
:class:`~trionos._transport.Transport`, and turns its frames into messages.

Receiving is inline: ``recv()`` reads the socket and parses in the caller's own task. There is no
reader task and no channel between the socket and the application. When nobody is receiving
(a push-only handler, or one busy with a message for a long while), the endpoint's keeper task
(:func:`trionos._heartbeat.run_keeper`) notices it at its next tick and starts a *servicer* for
that connection: a task that reads on its behalf, so that pings are answered, a close is
noticed and the peer's traffic keeps the heartbeat alive. The servicer reads ahead at most
:data:`READ_AHEAD_BYTES` of messages (or ``max_queue`` messages, at least 256); then it stops
reading, and TCP backpressure reaches the peer. The idle clock never stops: a peer whose
messages fill the read-ahead while the handler is busy for longer than the heartbeat timeout
cannot show that it is alive, and is timed out. The next ``recv`` stops the servicer and reads
inline again.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import trio
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import CLOSED, OPEN

from ._errors import ConnectionClosed
from ._fastpath import FRAME_OVERHEAD, ClientCore, MessageCore, ProtocolLog, ServerCore
from ._frames import OP_CLOSE as _OP_CLOSE
from ._frames import OP_PING, close_payload, encode_frame, message_frame
from ._http import Headers, RequestHead
from ._inflation import DEFAULT_INFLATE_RATE, InflationBudget
from ._json import dumps as dumps_json
from ._json import loads as loads_json
from ._metrics import Metrics
from ._ratelimit import RateLimit, RateVerdict, TokenBucket
from ._support import TaskSpawner
from ._transport import NOT_WRITTEN, WRITTEN, Transport

__all__ = [
    "FRAME_OVERHEAD",
    "PING_LIMIT",
    "READ_AHEAD_BYTES",
    "ClientCore",
    "MessageCodec",
    "ProtocolLog",
    "ServerCore",
    "WebSocket",
]

logger = logging.getLogger("trionos.connection")

T = TypeVar("T")

#: Pings a peer may send (protocol pings, and text ``"ping"`` where it is answered): 2 per second
#: in bursts of 20; a peer that sends 20 more in a row beyond that is closed with 1008.
PING_LIMIT = RateLimit(rate=2.0, burst=20, close_after=20)

#: Server frames are not masked, so every server ping is the same bytes.
_SERVER_PING = encode_frame(OP_PING, b"")

#: What a servicer reads ahead for a handler that is not receiving, in message bytes...
READ_AHEAD_BYTES = 64 * 1024
#: ...and in messages, whatever they hold (unless ``max_queue`` is larger).
_READ_AHEAD_MESSAGES = 256

#: What one read takes.
_RECEIVE_SIZE = 64 * 1024
#: A read larger than this is fed to the parser in slices of this size...
_FEED_SLICE = 4096
#: ...and once this many frames were parsed in one go, the parser lets other tasks run.
_FRAMES_PER_CHECKPOINT = 256
#: On a connection that inflates (permessage-deflate), reads are fed in slices of this size: ~1 MiB
#: inflated at most per slice (deflate's ratio is ~1,030:1), and the read-ahead bound is checked
#: after each, so one read cannot queue more than the bound and one slice's worth...
_INFLATE_SLICE = 1024
#: ...and other tasks run whenever this many bytes were inflated since they last did.
_INFLATED_PER_CHECKPOINT = 256 * 1024

#: A read moves the idle deadline only when it falls short of ``timeout`` seconds ahead, and then
#: this much further (at most this share of the timeout): a silent peer is timed out between
#: ``timeout`` and ``timeout`` + 0.25 s after its last bytes, and a busy connection moves its
#: deadline a few times a second instead of on every message.
_IDLE_SLACK = 0.25
_IDLE_SLACK_SHARE = 1 / 64

# Who reads the socket now.
_RECV = 1
_SERVICE = 2


class MessageCodec(Protocol[T]):
    """What ``send_message``/``recv_message`` need: :class:`trionos.Codec` is one."""

    def encode(self, message: T) -> str: ...

    def decode(self, data: str | bytes) -> T: ...


class WebSocket:
    """An open WebSocket connection.

    Obtained from :meth:`Request.accept <trionos.Request.accept>` on the server or
    :func:`trionos.connect` on the client. Messages are ``str`` (text frames) or ``bytes``
    (binary frames). Iterating with ``async for`` yields received messages and stops quietly on
    a normal close (1000, 1001); any other close raises :class:`~trionos.ConnectionClosed`.

    Bounds: at most ``max_message_size`` bytes per received message, each frame of a fragmented
    message counting 6 bytes more (a larger one closes the connection with 1009); invalid UTF-8
    closes it with 1007, a protocol violation with 1002. Outgoing data waits in ``send`` while
    the socket is full, so a sender feels the peer's backpressure. While nobody receives, at
    most 64 KiB or ``message_queue_size`` messages (at least 256) are read ahead on the
    handler's behalf, then reading stops (docs/design.md, "Receiving inline"). Objects are
    hashable by identity and carry a unique ``id``.
    """

    # One per open connection, held for its whole life: slots keep it small.
    __slots__ = (
        "_answer_text_ping",
        "_close_timeout",
        "_direct",
        "_drained",
        "_eof",
        "_idle_scope",
        "_idle_timeout",
        "_inbox",
        "_inflation",
        "_is_client",
        "_local_close",
        "_max_message_size",
        "_max_queue",
        "_metrics",
        "_nursery",
        "_path",
        "_pings",
        "_protocol",
        "_reader",
        "_reader_done",
        "_recv_epoch",
        "_request_head",
        "_seen_epoch",
        "_service_scope",
        "_taken",
        "_transport",
        "_unfed",
        "id",
        "remote",
    )

    def __init__(
        self,
        protocol: MessageCore,
        transport: Transport,
        *,
        nursery: TaskSpawner,
        is_client: bool,
        path: str | None,
        remote: tuple[str, int] | None,
        request_head: RequestHead | None,
        close_timeout: float,
        max_message_size: int,
        max_queue: int = 1,
        answer_text_ping: bool = False,
        metrics: Metrics | None = None,
        inflate_rate: float = DEFAULT_INFLATE_RATE,
        ping_limit: RateLimit = PING_LIMIT,
    ) -> None:
        self._protocol = protocol
        self._metrics = metrics
        self._transport = transport
        self._nursery = nursery
        self._is_client = is_client
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        self._max_queue = max(_READ_AHEAD_MESSAGES, max_queue)
        self._answer_text_ping = answer_text_ping
        self._local_close: tuple[int, str] | None = None
        # Messages parsed and not yet taken: the core's inbox, read from ``_taken`` on (one list
        # for the connection's life, so that a message costs no container of its own).
        self._inbox = protocol.inbox
        self._taken = 0
        self._eof = False
        self._drained = False
        self._reader = 0
        self._reader_done: trio.Event | None = None
        self._service_scope: trio.CancelScope | None = None
        self._recv_epoch = 0
        self._seen_epoch = -1
        self._idle_scope: trio.CancelScope | None = None
        self._idle_timeout = math.inf
        # Only a connection that inflates has a budget, and feeds its reads in small slices;
        # bytes of a read held back at the read-ahead bound or the budget wait in ``_unfed``.
        self._inflation: InflationBudget | None = None
        if any(isinstance(extension, PerMessageDeflate) for extension in protocol.extensions):
            self._inflation = InflationBudget(inflate_rate, trio.current_time())
        self._unfed: bytes | bytearray = b""
        # The socket that ``recv`` waits on and reads inline, when nothing else is needed (a
        # plain TCP socket; a connection that inflates reads through ``_read``, within bounds).
        self._direct = transport.socket if self._inflation is None else None
        # Pings (protocol and answered text ones) against the ping limit: the limit until the
        # first ping, its bucket from then on.
        self._pings: TokenBucket | RateLimit = ping_limit
        #: A unique, opaque identifier (12 hex digits).
        self.id: str = secrets.token_hex(6)
        self._path = path
        #: The peer's ``(host, port)``, or None for in-memory connections.
        self.remote = remote
        self._request_head = request_head

    @property
    def transport(self) -> Transport:
        """The connection's byte stream, as the hub writes broadcasts to it (see ``HubTransport``)."""
        return self._transport

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
        return self._protocol.subprotocol

    @property
    def bytes_received(self) -> int:
        """Bytes read from the network since the handshake (frames, headers and control frames)."""
        return self._transport.bytes_in

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the network since the handshake (the 101 response, every frame)."""
        return self._transport.bytes_out

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return (
            self._local_close is not None
            or self._protocol.state is not OPEN
            or self._transport.closed
            or self._transport.close_sent
        )

    def _close_info(self) -> tuple[int, str] | None:
        if self._local_close is not None:
            return self._local_close
        protocol = self._protocol
        sent, received = protocol.close_sent, protocol.close_rcvd
        if sent is not None and (received is None or protocol.close_rcvd_then_sent is False):
            return int(sent.code), sent.reason
        if received is not None:
            return int(received.code), received.reason
        if protocol.state is not OPEN or self._transport.closed or self._eof:
            return 1006, ""
        return None

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 for a connection that ended without a close frame).

        The peer's code when the peer closed first, ours when we did (or when we failed the
        connection, e.g. 1002, 1007 or 1009).
        """
        info = self._close_info()
        return None if info is None else info[0]

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed ("" when none was given)."""
        info = self._close_info()
        return None if info is None else info[1]

    def _closed_error(self) -> ConnectionClosed:
        info = self._close_info() or (1006, "")
        return ConnectionClosed(info[0], info[1])

    # --- receiving ---------------------------------------------------------------------------

    async def recv(self) -> str | bytes:
        """Receive the next message.

        Reads the socket and parses in the caller's own task. Messages that arrived before the
        peer closed are still returned; after them this raises. A checkpoint even when a message
        is waiting; cancelling ``recv`` loses no message.

        Returns:
            The message: ``str`` for a text message, ``bytes`` for a binary one.

        Raises:
            ConnectionClosed: the connection is closed (its ``code`` and ``reason`` say how).
        """
        return await self._receive(stop_iteration=False)

    def __aiter__(self) -> WebSocket:
        return self

    def __anext__(self) -> Coroutine[Any, Any, str | bytes]:
        # Not a coroutine of its own: an idle connection waits here for its whole life, and one
        # frame less per connection is memory saved.
        return self._receive(stop_iteration=True)

    def _done_reading(self) -> bool:
        # After a close frame (or a failure) the core discards whatever else arrives. A close
        # frame received moves the core out of OPEN in the same call, so ``is_open`` covers it.
        return (
            self._eof or self._transport.closed or self._local_close is not None or not self._protocol.is_open
        )

    async def _receive(self, *, stop_iteration: bool) -> str | bytes:
        # The checkpoints of a trio memory channel: a message already here is taken, then the
        # task yields (shielded, so the message cannot be lost); the end raises at once.
        inbox = self._inbox
        transport = self._transport
        checkpointed = False
        while True:
            if len(inbox) > self._taken:
                if checkpointed:
                    return self._take()
                await trio.lowlevel.checkpoint_if_cancelled()
                message = self._take()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return message
            if self._done_reading():
                if not checkpointed:
                    await trio.lowlevel.checkpoint_if_cancelled()
                error = self._closed_error()
                if stop_iteration and error.normal:
                    raise StopAsyncIteration
                raise error
            if self._reader:
                await self._wait_for_reader()
                checkpointed = True
                continue
            self._reader = _RECV
            self._recv_epoch += 1
            try:
                sock = self._direct
                if sock is not None and self._drained:
                    # The common case, inline (no coroutine more per message): the last read
                    # emptied the socket, so wait until it is readable (the checkpoint), read
                    # what came and parse it. A wakeup with nothing to read goes round again.
                    try:
                        await trio.lowlevel.wait_readable(sock)
                        data = transport.read_nowait(_RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        data = self._read_failed(exc)
                    if data is not None:
                        self._drained = len(data) < _RECEIVE_SIZE
                        if not self._took(data):
                            await self._feed_slices(data)
                else:
                    await self._read()
            finally:
                self._reader = 0
                if self._reader_done is not None:
                    self._reader_finished()
            if len(inbox) > self._taken:
                # The read was a checkpoint already. Most often it brought exactly one message.
                if len(inbox) == 1:
                    return inbox.pop()
                return self._take()
            checkpointed = True

    def _take(self) -> str | bytes:
        inbox = self._inbox
        taken = self._taken
        message = inbox[taken]
        taken += 1
        if taken == len(inbox):
            inbox.clear()
            taken = 0
        self._taken = taken
        return message

    async def _wait_for_reader(self) -> None:
        """Wait until whoever reads now is done; a servicer is asked to stop at once."""
        if self._reader == _SERVICE and self._service_scope is not None:
            self._service_scope.cancel()
        if self._reader_done is None:
            self._reader_done = trio.Event()
        await self._reader_done.wait()

    def _reader_finished(self) -> None:
        self._reader = 0
        if self._reader_done is not None:
            self._reader_done.set()
            self._reader_done = None

    async def _read(self) -> None:
        """Read once and parse what came (the caller owns reading)."""
        if self._inflation is not None:
            if self._unfed:  # the rest of the last read comes first
                await trio.lowlevel.checkpoint_if_cancelled()
                data, self._unfed = self._unfed, b""
                await self._feed_inflating(data)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            await self._wait_for_inflation_budget()
        transport = self._transport
        sock = transport.socket
        try:
            if sock is None:
                read = await transport.receive_some(_RECEIVE_SIZE)
            else:
                # Transport.receive_some, inlined: one coroutine less. When the last read emptied
                # the socket, a read now would most likely fail (a syscall and an exception for
                # nothing): wait for readiness first, which is a checkpoint too.
                if self._drained:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                maybe = transport.read_nowait(_RECEIVE_SIZE)
                if maybe is None:
                    while maybe is None:
                        await trio.lowlevel.wait_readable(sock)
                        maybe = transport.read_nowait(_RECEIVE_SIZE)
                elif not self._drained:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                read = maybe
                self._drained = len(read) < _RECEIVE_SIZE
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            read = self._read_failed(exc)
        if self._inflation is not None and read:
            self._move_idle_deadline()
            await self._feed_inflating(read)
        elif not self._took(read):
            await self._feed_slices(read)

    def _read_failed(self, exc: Exception) -> bytes:
        logger.debug("%r: read failed: %r", self, exc)
        return b""

    def _took(self, data: bytes | bytearray) -> bool:
        """Handle a read on a connection that does not inflate: False if it is for ``_feed_slices``.

        The end of the stream, or a read small enough to parse in one go, is handled here, with
        no coroutine; a larger read is left to :meth:`_feed_slices`.
        """
        if not data:
            self._eof = True
            self._protocol.receive_eof()
            self._flush_protocol()
            return True
        if self._idle_scope is not None:
            self._move_idle_deadline()
        if len(data) > _FEED_SLICE:
            return False
        self._feed(data)
        return True

    def _move_idle_deadline(self) -> None:
        """Traffic from the peer: push the idle deadline (if any) forward."""
        scope = self._idle_scope
        if scope is not None:
            # Moving a cancel scope's deadline costs trio a heap update: it is moved only when
            # it falls short, and then a little further (see _IDLE_SLACK), not on every read.
            deadline = trio.current_time() + self._idle_timeout
            if deadline > scope.deadline:
                scope.deadline = deadline + min(_IDLE_SLACK, self._idle_timeout * _IDLE_SLACK_SHARE)

    async def _feed_slices(self, data: bytes | bytearray) -> None:
        """Parse a large read: bound the CPU one connection takes before others run.

        A read full of tiny frames is parsed a slice at a time, yielding between slices
        (shielded: the bytes are ours now). The rest of a large frame the parser is inside holds
        no frame boundary, so no tiny frames: it goes in one piece.
        """
        protocol = self._protocol
        parsed = 0
        start = 0
        end = len(data)
        while start < end:
            if parsed >= _FRAMES_PER_CHECKPOINT:
                await trio.lowlevel.cancel_shielded_checkpoint()
                parsed = 0
            stop = start + max(_FEED_SLICE, protocol.frame_remainder)
            parsed += self._feed(data if start == 0 and stop >= end else data[start:stop])
            start = stop

    async def _wait_for_inflation_budget(self) -> None:
        """Before reading: wait while inflation has used up this connection's budget."""
        assert self._inflation is not None
        delay = self._inflation.delay(trio.current_time())
        if delay > 0:
            if self._metrics is not None:
                self._metrics.inflation_waits += 1
            await trio.sleep(delay)

    async def _feed_inflating(self, data: bytes | bytearray) -> None:
        """Parse a read on a connection that inflates, a slice at a time, within its bounds.

        Stops at the read-ahead bound or when the inflation budget is spent; the rest of
        ``data`` waits in ``_unfed`` for the next read (so TCP pushes back meanwhile).
        """
        budget = self._inflation
        assert budget is not None
        inbox = self._inbox
        protocol = self._protocol
        inflated = 0
        start = 0
        end = len(data)
        while start < end:
            if inflated >= _INFLATED_PER_CHECKPOINT:
                await trio.lowlevel.cancel_shielded_checkpoint()  # shielded: the bytes are ours
                inflated = 0
            # The rest of a frame the parser is inside goes in one piece: it completes one frame
            # at most, whose inflation max_message_size bounds.
            stop = start + max(_INFLATE_SLICE, protocol.frame_remainder)
            piece = data[start:stop]
            start = stop
            before = len(inbox)
            self._feed(piece)
            added = sum(len(message) for message in inbox[before:]) - len(piece)
            budget.spend(added, trio.current_time())
            inflated += max(added, 0)
            if budget.exhausted() or self._read_ahead_full():
                self._unfed = data[start:]
                return

    def _feed(self, data: bytes | bytearray) -> int:
        """Parse ``data``; queue complete messages and send the core's replies. Frames parsed."""
        protocol = self._protocol
        inbox = self._inbox
        before = len(inbox)
        frames = protocol.feed(data)
        if self._answer_text_ping and len(inbox) > before and "ping" in inbox:
            self._answer_text_pings(before)
        metrics = self._metrics
        if metrics is not None:
            metrics.messages_in += len(inbox) - before
            metrics.bytes_in += protocol.bytes_in
            protocol.bytes_in = 0
        if protocol.core_fed:
            if protocol.pings_received:
                self._charge_pings(protocol.pings_received)
                protocol.pings_received = 0
            self._flush_protocol()
        return frames

    def _answer_text_pings(self, before: int) -> None:
        """Take the text pings out of ``inbox[before:]`` and answer each (within the ping limit)."""
        inbox = self._inbox
        pings = 0
        for index in range(len(inbox) - 1, before - 1, -1):
            if inbox[index] == "ping":
                del inbox[index]
                pings += 1
        for _ in range(pings):  # each pong goes out before a close for the pings after it
            if self._charge_pings(1):
                self._write_or_drop(message_frame("pong", masked=self._is_client))

    def _charge_pings(self, count: int) -> int:
        """Count *count* pings against the ping limit; how many are within it.

        A text ping over the limit gets no pong (a protocol ping's pong is the core's, sent
        anyway); once ``close_after`` pings in a row were over it, the connection is failed with
        1008, as a chat flood is closed.
        """
        if not self._protocol.is_open:
            return 0  # closing: nothing more is answered or counted
        bucket = self._pings
        now = trio.current_time()
        if isinstance(bucket, RateLimit):
            bucket = self._pings = bucket.bucket(now)
        within = 0
        for _ in range(count):
            verdict = bucket.take(now)
            if verdict is RateVerdict.ACCEPT:
                within += 1
                continue
            if self._metrics is not None:
                self._metrics.rate_limited += 1
            if verdict is RateVerdict.CLOSE:
                logger.info("%r: closing, too many pings", self)
                self._protocol.fail(1008, "too many pings")
                self._flush_protocol()
                break
        return within

    def _flush_protocol(self) -> None:
        """Send what the core wants sent: pongs, a close frame (b"" asks to end the stream)."""
        for data in self._protocol.data_to_send():
            if data:
                try:
                    self._transport.write_control(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    def _write_or_drop(self, frame: bytes) -> None:
        try:
            self._transport.write_nowait(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # --- reading while nobody receives -----------------------------------------------------

    def _keep(self) -> None:
        """Called by the keeper on every tick: start a servicer if nobody read since the last tick."""
        if self._reader or self._done_reading():
            return
        if self._seen_epoch != self._recv_epoch:
            self._seen_epoch = self._recv_epoch  # someone received lately: look again next tick
            return
        if self._read_ahead_full():
            return  # the application has not taken what was read ahead
        self._reader = _SERVICE
        try:
            self._nursery.start_soon(self._service)
        except RuntimeError:  # the nursery is closing, and with it this connection
            self._reader_finished()

    async def _service(self) -> None:
        """Read on behalf of a handler that does not, until it does or the read-ahead is full."""
        scope = self._service_scope = trio.CancelScope()
        if self._reader_done is not None:
            # A receiver came between start_soon and now: it found no scope to cancel and waits
            # for this task to finish, so finish at once (reading on would keep it waiting while
            # the messages pile up here, for ever once the peer has nothing more to send).
            scope.cancel()
        try:
            with scope:
                # Once it is full, reading stops: TCP backpressure reaches the peer.
                while not self._done_reading() and not self._read_ahead_full():
                    await self._read()
        finally:
            self._service_scope = None
            self._reader_finished()

    def _read_ahead_full(self) -> bool:
        waiting = len(self._inbox) - self._taken
        if not waiting:
            return False
        if waiting >= self._max_queue:
            return True
        # Counted here, on the servicer's path only, rather than on every message.
        return sum(len(message) for message in self._inbox[self._taken :]) >= READ_AHEAD_BYTES

    def _watch_idle(self, scope: trio.CancelScope, timeout: float) -> None:
        """Cancel ``scope`` when nothing arrives from the peer for ``timeout`` seconds."""
        self._idle_scope = scope
        self._idle_timeout = timeout
        scope.deadline = trio.current_time() + timeout

    async def recv_json(self) -> Any:
        """Receive a message and parse it as JSON.

        Returns:
            The parsed JSON value.

        Raises:
            DecodeError: the message is not valid JSON.
            ConnectionClosed: the connection is closed.
        """
        return loads_json(await self.recv())

    async def recv_message(self, codec: MessageCodec[T]) -> T:
        """Receive a message and decode it with *codec*.

        The connection stays usable after a :class:`~trionos.DecodeError`: answer it and read on.

        Args:
            codec: what decodes the message, e.g. a :class:`~trionos.Codec`.

        Returns:
            The decoded message.

        Raises:
            DecodeError: *codec* cannot decode the message.
            ConnectionClosed: the connection is closed.
        """
        return codec.decode(await self.recv())

    # --- sending -----------------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        When the socket takes the frame at once, ``send`` returns without a task switch;
        otherwise it waits while the socket buffer is full (the peer's backpressure). A message
        handed to ``send`` before ``close()`` goes out before the close frame. If cancelled while
        waiting, the rest of the frame still goes out in order (or the connection is given up).

        Args:
            message: ``str`` for a text message, ``bytes`` for a binary one.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: *message* is neither ``str`` nor ``bytes``.
        """
        frame = message_frame(message, masked=self._is_client)
        # The common case without a coroutine more: the socket takes the frame at once.
        written = self._try_send(frame)
        if written != WRITTEN:
            await self._send_rest(frame, written)

    async def send_json(self, obj: Any) -> None:
        """Send *obj* as compact JSON text.

        Args:
            obj: a JSON-serialisable value.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(dumps_json(obj))

    async def send_message(self, message: T, codec: MessageCodec[T]) -> None:
        """Encode a typed message with *codec* and send it as text.

        Args:
            message: the message to encode.
            codec: what encodes it, e.g. a :class:`~trionos.Codec`.

        Raises:
            EncodeError: *codec* cannot encode *message*.
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(codec.encode(message))

    async def send_frame(self, frame: bytes) -> None:
        """Send a complete frame already encoded (used by the hub; waits like :meth:`send`).

        Args:
            frame: one whole WebSocket frame, masked on the client side.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        written = self._try_send(frame)
        if written != WRITTEN:
            await self._send_rest(frame, written)

    def _try_send(self, frame: bytes) -> int:
        """Write ``frame`` now if nothing has to go before it: what ``Transport.try_write`` did."""
        if self._local_close is not None or not self._protocol.is_open:
            raise self._closed_error()
        try:
            written = self._transport.try_write(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None
        metrics = self._metrics
        if written and metrics is not None:  # _count_sent, inlined on this path
            metrics.messages_out += 1
            metrics.bytes_out += len(frame)
        return written

    async def _send_rest(self, frame: bytes, written: int) -> None:
        """Finish a send the socket did not take at once: write ``frame``, or wait for its tail."""
        if written == NOT_WRITTEN:
            await self._send_waiting(frame)
        else:
            await self._wait_sent()

    def _count_sent(self, frame: bytes) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.messages_out += 1
            metrics.bytes_out += len(frame)

    async def _send_waiting(self, frame: bytes) -> None:
        """Write ``frame`` behind the backlog (or through the stream), waiting while the socket is full."""
        if self.closed:
            raise self._closed_error()
        try:
            await self._transport.write(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None
        self._count_sent(frame)

    async def _wait_sent(self) -> None:
        """Wait until the tail of a frame the socket took only part of has gone out too."""
        try:
            await self._transport.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None

    def ping_nowait(self) -> None:
        """Send a protocol ping without waiting; skipped if the connection is closed or its outbox is full."""
        if self.closed:
            return
        frame = encode_frame(OP_PING, b"", masked=True) if self._is_client else _SERVER_PING
        self._write_or_drop(frame)

    # --- closing -----------------------------------------------------------------------------

    def _close_complete(self) -> bool:
        protocol = self._protocol
        if self._eof or self._transport.closed or protocol.state is CLOSED:
            return True
        # A server closes TCP as soon as the core says so (both close frames crossed, or it
        # failed the connection); a client waits for the server to close it.
        return not self._is_client and protocol.eof_sent

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with *code* and *reason*, waiting at most ``close_timeout`` for the peer.

        Messages already handed to ``send`` go out first. Idempotent, and the TCP connection is
        closed even if the caller is cancelled.

        Args:
            code: the close code (1000 is a normal close).
            reason: a short text, cut to fit the 125-byte control frame.
        """
        try:
            with trio.move_on_after(self._close_timeout):
                if self._local_close is None and self._protocol.state is OPEN and not self._transport.closed:
                    # The reason is cut to fit the 125-byte control frame, as close_payload does.
                    fitting = close_payload(code, reason)[2:].decode("utf-8")
                    try:
                        self._protocol.send_close(code, fitting)
                    except InvalidState:  # pragma: no cover - the state was checked just now
                        pass
                    for data in self._protocol.data_to_send():
                        if data:
                            await self._transport.write_close(data)
                else:
                    await self._transport.flush()  # e.g. the close frame the core echoed
                while not self._close_complete() and self._local_close is None:
                    if self._reader:
                        await self._wait_for_reader()
                        continue
                    self._reader = _RECV
                    try:
                        await self._read()
                    finally:
                        self._reader_finished()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("%r: closing handshake cut short: %r", self, exc)
        finally:
            await trio.aclose_forcefully(self._transport)

    async def close_without_reply(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (after what is queued) and close at once, not waiting for the reply.

        For a side that is going away anyway, e.g. a client whose task is being cancelled.
        Bounded by ``close_timeout``.

        Args:
            code: the close code.
            reason: a short text, cut to fit the 125-byte control frame.
        """
        if not self.closed:
            self._local_close = (code, reason)
            frame = encode_frame(_OP_CLOSE, close_payload(code, reason), masked=self._is_client)
            with trio.move_on_after(self._close_timeout):
                try:
                    await self._transport.write_close(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await trio.aclose_forcefully(self._transport)

    def abort(self, code: int, reason: str) -> None:
        """End a connection whose peer cannot be waited for (dead, or not reading), without waiting.

        A close frame is attempted only if that cannot delay the close, then the connection is
        closed. ``close_code``/``close_reason`` report *code* and *reason*; ``recv`` in other
        tasks raises :class:`~trionos.ConnectionClosed` with them.

        Args:
            code: the close code to report (and to send, if the socket takes it at once).
            reason: the close reason.
        """
        if self._local_close is not None or self._transport.closed:
            return
        self._local_close = (code, reason)
        goodbye = None
        if self._protocol.state is OPEN:
            goodbye = encode_frame(_OP_CLOSE, close_payload(code, reason), masked=self._is_client)
        self._transport.abort_soon(goodbye)
        if self._service_scope is not None:
            self._service_scope.cancel()
