"""The byte stream under every WebSocket: direct socket reads, one ordered write path, a bounded outbox.

A :class:`~trionos._connection.WebSocket` reads and writes through a :class:`Transport`, which

* reads straight from the socket descriptor with trio's checkpoint rules (TLS and in-memory
  streams are read through their own ``receive_some``);
* writes a ready-made frame straight into the socket without awaiting or switching tasks (the
  broadcast fast path), and falls back to a bounded outbox drained by a writer task, started only
  while there is a backlog, when the socket buffer is full;
* keeps frame order exact: every write (data frames, pongs, the close frame) goes through one
  lock and flushes the outbox first, and nothing is written past a close frame.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from typing import Protocol, TypeVar

import trio

from ._deflate import Deflater
from ._frames import is_close_frame
from ._support import TaskSpawner

__all__ = ["NOT_WRITTEN", "TAIL_QUEUED", "WRITTEN", "ProgressSignal", "Transport", "write_each"]

logger = logging.getLogger("trionos.transport")


#: What one read takes when the caller does not say (trio's SocketStream uses the same).
_DEFAULT_RECEIVE_SIZE = 64 * 1024

#: What :meth:`Transport.try_write` did: nothing (the caller awaits ``write``)...
NOT_WRITTEN = 0
#: ...the whole frame went into the socket...
WRITTEN = 1
#: ...or the socket took part of it (or none) and the rest is queued (the caller awaits ``flush``).
TAIL_QUEUED = 2

#: The shared, always empty outbox of connections without a backlog (never appended to).
_NO_BACKLOG: deque[bytes] = deque(maxlen=0)


class WriteListener(Protocol):
    """Told before a direct write on a connection (the hub's registered client is one)."""

    def before_write(self) -> None:
        """Called before a direct write, so that what the listener queued goes out first."""
        ...


class ProgressSignal:
    """``wait_for_progress()``: what the hub's ``disconnect`` policy waits on; a new event each time."""

    __slots__ = ("_progress",)
    _progress: trio.Event | None

    async def wait_for_progress(self) -> None:
        """Return once the outbox has shrunk (some queued bytes went on towards the peer)."""
        if self._progress is None:
            self._progress = trio.Event()
        await self._progress.wait()

    def _signal_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None


class Transport(ProgressSignal, trio.abc.AsyncResource):
    """Wraps the connection's stream; see the module docstring.

    ``max_outbox_bytes`` bounds the bytes queued while the socket is full. The bound admits one
    frame larger than itself when the outbox is empty, so a single large message always fits.
    Background tasks (the outbox writer, a forced close) run in ``nursery``: the server's support
    nursery (:mod:`._support`), or on the client side the connection's own.
    """

    # Every open connection holds one of these for its whole life: slots keep it small.
    __slots__ = (
        "_busy",
        "_lock",
        "_nursery",
        "_outbox",
        "_outbox_bytes",
        "_partial_head",
        "_stream",
        "_writer_running",
        "bytes_in",
        "bytes_out",
        "close_sent",
        "closed",
        "deflater",
        "dropped_frames",
        "max_outbox_bytes",
        "peak_outbox_bytes",
        "socket",
        "write_listener",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        nursery: TaskSpawner,
        max_outbox_bytes: int = 1024 * 1024,
    ) -> None:
        self._stream = stream
        self._nursery = nursery
        self.max_outbox_bytes = max_outbox_bytes
        # Only a plain TCP socket can take frame bytes directly; TLS and in-memory streams go
        # through the outbox and writer task instead. The descriptor is read at each write, never
        # cached: once the socket is closed it reads -1, and a number the kernel may have reused
        # for another connection is never written to.
        #: The socket read and written directly (a plain TCP stream), None for TLS or in-memory.
        self.socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        # Made on the first write that has to wait: most writes complete at once, and then
        # serialising them needs no more than the ``_busy`` flag.
        self._lock: trio.StrictFIFOLock | None = None
        # True while a task writes under the lock; the fast path must not interleave with it.
        self._busy = False
        # Allocated on first use: most connections never need an outbox or a progress event.
        self._outbox: deque[bytes] = _NO_BACKLOG
        self._outbox_bytes = 0
        self._partial_head = False
        self._writer_running = False
        self._progress: trio.Event | None = None
        #: Told before every ``write``/``send_all`` (the hub writes queued broadcasts first).
        self.write_listener: WriteListener | None = None
        #: Compresses data frames when the connection negotiated permessage-deflate.
        self.deflater: Deflater | None = None
        self.close_sent = False
        self.closed = False
        self.dropped_frames = 0
        #: The most bytes the outbox ever held (to check the bound in tests and benchmarks).
        self.peak_outbox_bytes = 0
        #: Bytes read from and written to the stream so far (for the access log).
        self.bytes_in = 0
        self.bytes_out = 0

    # --- reading -----------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Read bytes from the peer; a checkpoint even when data is waiting.

        Cancelling a read loses no bytes.

        Args:
            max_bytes: the most to return (64 KiB when None).

        Returns:
            What arrived, or b"" at the end of the stream.

        Raises:
            trio.BrokenResourceError: the connection was reset.
            trio.ClosedResourceError: the transport is closed.
        """
        sock = self.socket
        if sock is None:
            received = await self._stream.receive_some(max_bytes)
            self.bytes_in += len(received)
            return received
        # Straight from the descriptor, with trio's checkpoint rules: SocketStream's layers would
        # keep three more suspended frames on every idle connection.
        await trio.lowlevel.checkpoint_if_cancelled()
        data = self.read_nowait(max_bytes)
        if data is None:
            while data is None:
                await trio.lowlevel.wait_readable(sock)
                data = self.read_nowait(max_bytes)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def read_nowait(self, max_bytes: int | None = None) -> bytes | None:
        """What the socket holds, up to *max_bytes* (64 KiB when None); None when nothing has arrived yet.

        For a plain TCP stream only (:attr:`socket` is not None); no checkpoint: the caller
        waits with ``trio.lowlevel.wait_readable(transport.socket)`` and keeps trio's rules.

        Raises:
            trio.BrokenResourceError: the connection was reset.
            trio.ClosedResourceError: the socket is closed.
        """
        assert self.socket is not None
        fd = self.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            data = os.read(fd, max_bytes or _DEFAULT_RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket read failed: {exc}") from exc
        self.bytes_in += len(data)
        return data

    # --- writing -----------------------------------------------------------------------------

    @property
    def outbox_bytes(self) -> int:
        """Bytes queued behind a full socket buffer."""
        return self._outbox_bytes

    def _check_writable(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the connection is closed")
        if self.close_sent:
            raise trio.ClosedResourceError("a close frame was sent; no data may follow it")

    def _write_direct(self, frame: bytes) -> bool:
        """Try the socket without blocking; queue any unwritten tail. True if anything was done."""
        if self.socket is None or self._outbox or self._busy:
            return False
        self._write_now(frame)
        return True

    def _write_now(self, frame: bytes) -> None:
        """Write what the socket takes now, queue the rest (a socket, nothing queued, no writer)."""
        deflater = self.deflater
        committed = deflater is not None and deflater.context_takeover
        if committed:
            frame = deflater.compress(frame)  # type: ignore[union-attr]
        sent = self._write_some(frame)
        if sent < len(frame):
            self._enqueue_rest(frame, sent, committed=committed)

    def _compressed_once(self, frame: bytes) -> bytes:
        """``frame`` as it is queued: compressed now by a compress-once deflater.

        A context-takeover deflater compresses on the way into the socket instead (see
        :mod:`._deflate`): the outbox then holds uncompressed frames, which may still be dropped.
        """
        deflater = self.deflater
        if deflater is None or deflater.context_takeover:
            return frame
        return deflater.compress(frame)

    def _write_some(self, data: bytes | memoryview) -> int:
        """One non-blocking write to the socket; how many bytes it took (0 when full)."""
        assert self.socket is not None
        fd = self.socket.fileno()
        if fd < 0:
            self._broken()
            raise trio.ClosedResourceError("the connection is closed")
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._broken()
            raise trio.BrokenResourceError(f"socket write failed: {exc}") from exc
        self.bytes_out += sent
        return sent

    def _broken(self) -> None:
        # The peer is gone; the connection's next read sees the same fault and ends it.
        self.closed = True
        self._discard_outbox()

    def _enqueue(self, frame: bytes) -> None:
        if self._outbox is _NO_BACKLOG:
            self._outbox = deque()
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self.peak_outbox_bytes = max(self.peak_outbox_bytes, self._outbox_bytes)
        if not self._writer_running:
            self._writer_running = True
            self._nursery.start_soon(self._drain_in_background)

    def _enqueue_rest(self, frame: bytes, sent: int, *, committed: bool = False) -> None:
        """Queue what the socket did not take of ``frame`` (the outbox was empty).

        ``committed``: the frame went through a context-takeover compressor, so it must go out
        as it is even if none of it was written.
        """
        self._enqueue(frame[sent:] if sent else frame)
        # A frame whose start is on the wire must be finished, whatever the policy drops.
        self._partial_head = sent > 0 or committed

    def has_room(self, size: int) -> bool:
        """Tell whether a frame of *size* bytes may be queued now without breaking the bound.

        Args:
            size: the frame's length in bytes.

        Returns:
            True when the outbox is empty (one frame always fits) or the frame fits the bound.
        """
        return not self._outbox or self._outbox_bytes + size <= self.max_outbox_bytes

    def write_nowait(self, frame: bytes) -> bool:
        """Write or queue a complete frame without blocking.

        Args:
            frame: one or more whole frames.

        Returns:
            False (nothing done) if the outbox is full, else True.

        Raises:
            trio.ClosedResourceError: the connection is closed or a close frame was sent.
            trio.BrokenResourceError: the socket failed.
        """
        self._check_writable()
        frame = self._compressed_once(frame)
        if self._write_direct(frame):
            return True
        if not self.has_room(len(frame)):
            return False
        self._enqueue(frame)
        return True

    def write_dropping_oldest(self, frame: bytes) -> int:
        """Write or queue *frame*, dropping the oldest queued frames to keep the bound.

        Never blocks and never refuses the frame; the end of a frame already partly on the wire
        is never dropped.

        Args:
            frame: one or more whole frames.

        Returns:
            How many queued frames were dropped.

        Raises:
            trio.ClosedResourceError: the connection is closed or a close frame was sent.
            trio.BrokenResourceError: the socket failed.
        """
        self._check_writable()
        frame = self._compressed_once(frame)
        if self._write_direct(frame):
            return 0
        dropped = 0
        outbox = self._outbox
        # The end of a frame whose start is already on the wire must go out, or the stream breaks.
        keep = 1 if self._partial_head else 0
        while len(outbox) > keep and self._outbox_bytes + len(frame) > self.max_outbox_bytes:
            if keep:
                head = outbox.popleft()
                self._outbox_bytes -= len(outbox.popleft())
                outbox.appendleft(head)
            else:
                self._outbox_bytes -= len(outbox.popleft())
            dropped += 1
        self.dropped_frames += dropped
        self._enqueue(frame)
        return dropped

    async def _flush_locked(self) -> None:
        while self._outbox:
            frame = self._outbox.popleft()
            committed = self._partial_head
            self._partial_head = False
            self._outbox_bytes -= len(frame)
            deflater = self.deflater
            if not committed and deflater is not None and deflater.context_takeover:
                frame = deflater.compress(frame)  # its turn to go out: now it is compressed
            await self._send_locked(frame)
            self._signal_progress()
        self._outbox = _NO_BACKLOG  # free the deque until the next backlog

    async def _send_locked(self, data: bytes | bytearray | memoryview) -> None:
        # Called with the lock held. A cancelled write must not leave half a frame behind: on a
        # socket we track what went out and put the rest back at the front of the outbox; on
        # other streams (TLS, memory) we cannot know, so the connection is given up.
        self._busy = True
        try:
            if self.socket is None:
                try:
                    await self._stream.send_all(data)
                except trio.Cancelled:
                    self.abort_soon()
                    raise
                self.bytes_out += len(data)
                return
            view = memoryview(data)
            while True:
                view = view[self._write_some(view) :]
                if not view:
                    return
                try:
                    await trio.lowlevel.wait_writable(self.socket)
                except trio.Cancelled:
                    self._requeue_front(bytes(view))
                    raise
        finally:
            self._busy = False

    def _requeue_front(self, rest: bytes) -> None:
        if self._outbox is _NO_BACKLOG:
            self._outbox = deque()
        self._outbox.appendleft(rest)
        self._partial_head = True
        self._outbox_bytes += len(rest)
        if not self._writer_running and not self.closed:
            self._writer_running = True
            self._nursery.start_soon(self._drain_in_background)

    async def _drain_in_background(self) -> None:
        try:
            async with self._writing():
                await self._flush_locked()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("outbox writer stopped: %r", exc)
            self._discard_outbox()
        finally:
            self._writer_running = False

    def _discard_outbox(self) -> None:
        self._outbox = _NO_BACKLOG
        self._partial_head = False
        self._outbox_bytes = 0
        self._signal_progress()

    async def write(self, frame: bytes) -> None:
        """Write a complete frame, waiting while the socket is full (backpressure).

        The frame goes out after any backlog, in order. Concurrent writers may each add one frame
        beyond ``max_outbox_bytes`` while they wait; they do not return until it is written. If
        cancelled while waiting, the rest of the frame stays queued at the front of the outbox
        (on a socket) or the connection is given up (TLS, in-memory), so no half frame is left.

        Args:
            frame: one whole frame.

        Raises:
            trio.ClosedResourceError: the connection is closed or a close frame was sent.
            trio.BrokenResourceError: the socket failed.
        """
        self._check_writable()
        if self.write_listener is not None:
            self.write_listener.before_write()
        await self._write_in_order(self._compressed_once(frame))

    def try_write(self, frame: bytes) -> int:
        """Write a complete data frame at once if nothing has to go before it.

        The fast path of :meth:`write`, without a coroutine: on a socket with no backlog and no
        other writer, ``frame`` goes straight into the socket, and a tail the socket does not take
        is queued. On :data:`NOT_WRITTEN` (a backlog, another writer, no socket, or a closed
        connection) the caller awaits :meth:`write` instead, which also raises for a closed
        connection; on :data:`TAIL_QUEUED` it awaits :meth:`flush`, as ``write`` does.

        Returns:
            :data:`WRITTEN`, :data:`TAIL_QUEUED` or :data:`NOT_WRITTEN` (0: nothing was done).

        Raises:
            trio.BrokenResourceError: the socket failed.
            trio.ClosedResourceError: the socket was closed under the connection.
        """
        if self.socket is None or self.closed or self.close_sent:
            return NOT_WRITTEN
        if self.write_listener is not None:
            self.write_listener.before_write()  # may queue broadcasts, which go first
        if self._outbox or self._busy:
            return NOT_WRITTEN
        deflater = self.deflater
        if deflater is not None and not deflater.context_takeover:
            frame = deflater.compress(frame)  # as _compressed_once, without a call on this path
        self._write_now(frame)
        return TAIL_QUEUED if self._outbox else WRITTEN  # the outbox was empty before

    def write_control(self, frame: bytes) -> None:
        """Write or queue a pong or close frame from the protocol core, without blocking.

        A pong that does not fit into a full outbox is dropped (a peer that pings but does not
        read gets no more than the bound). A close frame is always queued, one frame beyond the
        bound at most, and nothing may be written after it. Does nothing once closed.

        Args:
            frame: the control frame the core produced.

        Raises:
            trio.BrokenResourceError: the socket failed.
        """
        if self.closed or self.close_sent:
            return
        if self.write_listener is not None:
            self.write_listener.before_write()
        if is_close_frame(frame):
            if not self._write_direct(frame):
                self._enqueue(frame)
            self.close_sent = True
        elif not self._write_direct(frame) and self.has_room(len(frame)):
            self._enqueue(frame)

    async def write_close(self, frame: bytes) -> None:
        """Write a close frame after everything queued, waiting while the socket is full.

        Args:
            frame: the close frame; nothing may be written after it.

        Raises:
            trio.ClosedResourceError: the connection is closed or a close frame was sent.
            trio.BrokenResourceError: the socket failed.
        """
        self._check_writable()
        if self.write_listener is not None:
            self.write_listener.before_write()
        self.close_sent = True
        await self._write_in_order(frame)

    async def flush(self) -> None:
        """Wait until everything queued has reached the socket.

        Raises:
            trio.BrokenResourceError: the socket failed while flushing.
        """
        if self._outbox and not self.closed:
            async with self._writing():
                await self._flush_locked()

    async def _write_in_order(self, frame: bytes) -> None:
        # Straight into the socket when nothing is ahead; otherwise behind the backlog, which the
        # caller then drains under the lock (or waits for whoever is draining it).
        if not self._write_direct(frame):
            if self._outbox is _NO_BACKLOG:
                self._outbox = deque()
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
        if self._outbox:
            async with self._writing():
                await self._flush_locked()

    def _writing(self) -> trio.StrictFIFOLock:
        if self._lock is None:
            self._lock = trio.StrictFIFOLock()
        return self._lock

    # --- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.closed = True
        self._discard_outbox()
        await self._stream.aclose()

    def abort_soon(self, goodbye: bytes | None = None) -> None:
        """Close the stream without a closing handshake, from synchronous code (never blocks).

        ``goodbye`` (a close frame) is sent only if that cannot delay the close: on a socket it is
        written if the socket buffer takes it at once, and the socket is closed immediately (the
        peer sees the TCP close even if its buffers are full). Other streams (TLS, in-memory) get
        a background task that tries the goodbye for at most half a second, then closes the
        stream.

        Args:
            goodbye: a close frame to attempt first, or None.
        """
        if self.closed:
            return
        if goodbye is not None and not self.close_sent and self.socket is not None:
            try:
                self._write_direct(goodbye)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        self.closed = True
        self._discard_outbox()
        if self.socket is not None:
            self.socket.close()
            goodbye = None
        elif self.close_sent:
            goodbye = None
        self.close_sent = True
        try:
            self._nursery.start_soon(self._close_after_goodbye, goodbye)
        except RuntimeError:
            # The nursery has already closed, and with it the stream.
            pass

    async def _close_after_goodbye(self, goodbye: bytes | None) -> None:
        if goodbye is not None:
            # Shielded, so a goodbye still goes out when the connection is being cancelled; the
            # half-second bound keeps the cleanup short.
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                try:
                    async with self._writing():
                        await self._stream.send_all(goodbye)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await trio.aclose_forcefully(self._stream)


class _HasTransport(Protocol):
    # Any HubTransport: only trionos' own Transport gets the direct write.
    @property
    def transport(self) -> object: ...


R = TypeVar("R", bound=_HasTransport)


def write_each(recipients: Iterable[R], frame: bytes) -> list[R]:
    """Write ``frame`` straight into each recipient's socket; return those it could not take.

    This is the broadcast fast path: one loop, no await, no task switch, the same bytes for every
    recipient (for those that negotiated compression, the same compressed bytes). A recipient is
    returned (for the caller's slow-client policy) when it has a backlog, another write is in
    progress, or it has no socket (TLS, in-memory). When the socket takes only part of the
    frame, or none of it, the rest is queued in order (an empty outbox always admits a frame).
    Recipients whose connection is closed or broken are skipped.

    Args:
        recipients: objects with a ``transport``, e.g. the hub's clients.
        frame: the frame (or joined frames) every recipient gets.

    Returns:
        The recipients that need the slow path.
    """
    pending: list[R] = []
    write = os.write
    for recipient in recipients:
        transport = recipient.transport
        if type(transport) is not Transport:  # another transport (the bridge's): its own queue
            pending.append(recipient)
            continue
        if transport.closed or transport.close_sent:
            continue
        sock = transport.socket
        if sock is None or transport._outbox or transport._busy:
            pending.append(recipient)
            continue
        fd = sock.fileno()
        if fd < 0:
            transport._broken()
            continue
        # A compressed recipient gets the compressed frame, made once for all of them.
        data = frame if transport.deflater is None else transport.deflater.compress(frame)
        try:
            sent = write(fd, data)
        except BlockingIOError:
            sent = 0  # full: the outbox is empty, so the frame is queued like any unwritten tail
        except OSError:
            transport._broken()
            continue
        transport.bytes_out += sent
        if sent != len(data):
            committed = transport.deflater is not None and transport.deflater.context_takeover
            transport._enqueue_rest(data, sent, committed=committed)
    return pending
