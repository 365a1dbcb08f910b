"""A bounded in-memory byte pipe: two connected streams that push back like a TCP connection.

``trio.testing.memory_stream_pair`` buffers without limit, so a sender never waits and a peer that
stops reading goes unnoticed. Here each direction holds at most ``max_bytes`` unread bytes, and
``send_all`` waits while the peer's buffer is full: a slow reader slows its writer down, exactly as
socket buffers do, but deterministically and with no sockets (so ``MockClock`` autojump works).
"""

from __future__ import annotations

import operator

import trio
import trio.lowlevel

__all__ = ["PipeStream", "memory_pipe"]

#: The default bound per direction: about what a loopback socket buffers before the sender waits.
DEFAULT_PIPE_BYTES = 64 * 1024


class _Direction:
    """One direction of the pipe: bytes one end wrote and the other has not read yet."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        #: The writing end sent EOF (or closed): the reader gets b"" once ``data`` is drained.
        self.eof = False
        #: The reading end closed: writes fail with BrokenResourceError, as on a reset socket.
        self.reader_gone = False
        self.readable = trio.lowlevel.ParkingLot()
        self.writable = trio.lowlevel.ParkingLot()

    def wake_all(self) -> None:
        self.readable.unpark_all()
        self.writable.unpark_all()


class PipeStream(trio.abc.HalfCloseableStream):
    """One end of a :func:`memory_pipe`.

    ``send_all`` copies as much as fits into the peer's buffer and waits for room for the rest;
    ``receive_some`` waits for bytes or EOF. Closing an end sends EOF to the peer (which still reads
    what was already sent) and makes the peer's later writes raise
    :class:`trio.BrokenResourceError`. Operations on a closed end raise
    :class:`trio.ClosedResourceError`; two tasks in ``send_all`` (or in ``receive_some``) at once
    raise :class:`trio.BusyResourceError`.

    Cancellation: a cancelled ``send_all`` may have delivered part of its data (as with any trio
    stream, close the stream then); a cancelled ``receive_some`` loses nothing.
    """

    def __init__(self, outgoing: _Direction, incoming: _Direction) -> None:
        self._out = outgoing
        self._in = incoming
        self._closed = False
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PipeStream {state} outgoing={self.outgoing_bytes} incoming={self.incoming_bytes}>"

    @property
    def max_bytes(self) -> int:
        """The bound on unread bytes in each direction."""
        return self._out.max_bytes

    @property
    def outgoing_bytes(self) -> int:
        """Bytes this end sent that the peer has not read yet (at most ``max_bytes``)."""
        return len(self._out.data)

    @property
    def incoming_bytes(self) -> int:
        """Bytes the peer sent that this end has not read yet (at most ``max_bytes``)."""
        return len(self._in.data)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this end of the pipe is closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of *data*, waiting while the peer's buffer holds ``max_bytes`` unread bytes.

        Args:
            data: the bytes to write.

        Raises:
            trio.BrokenResourceError: the other end is closed.
            trio.ClosedResourceError: this end is closed, or ``send_eof`` was called.
            trio.BusyResourceError: another task is sending on this end.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            out = self._out
            view = memoryview(data).cast("B")
            while True:
                self._check_open()
                if out.eof:
                    raise trio.ClosedResourceError("send_eof() was called on this end of the pipe")
                if out.reader_gone:
                    raise trio.BrokenResourceError("the other end of the pipe is closed")
                if not view:
                    return
                room = out.max_bytes - len(out.data)
                if room <= 0:
                    await out.writable.park()
                    continue
                out.data += view[:room]
                view = view[room:]
                out.readable.unpark_all()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the peer's buffer has room (or the pipe is closed or broken)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            out = self._out
            while True:
                self._check_open()
                if out.eof or out.reader_gone or len(out.data) < out.max_bytes:
                    return
                await out.writable.park()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Tell the peer no more data will come; it still reads what was sent. Idempotent."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        self._check_open()
        self._out.eof = True
        self._out.wake_all()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait for bytes and return them.

        Args:
            max_bytes: the most to return (all buffered bytes for None).

        Returns:
            Up to *max_bytes* bytes; ``b""`` at EOF.

        Raises:
            ValueError: *max_bytes* is less than 1.
            trio.ClosedResourceError: this end is closed.
            trio.BusyResourceError: another task is receiving on this end.
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio's streams do
            if max_bytes < 1:
                raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            incoming = self._in
            while True:
                self._check_open()
                if incoming.data:
                    size = len(incoming.data) if max_bytes is None else min(max_bytes, len(incoming.data))
                    chunk = bytes(incoming.data[:size])
                    del incoming.data[:size]
                    incoming.writable.unpark_all()
                    return chunk
                if incoming.eof:
                    return b""
                await incoming.readable.park()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close this end: the peer reads what was sent, then EOF; its writes then fail. Idempotent."""
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._in.reader_gone = True
            # Unread incoming bytes are lost, as they are when a socket closes.
            self._in.data.clear()
            self._out.wake_all()
            self._in.wake_all()
        await trio.lowlevel.checkpoint()


def memory_pipe(max_bytes: int = DEFAULT_PIPE_BYTES) -> tuple[PipeStream, PipeStream]:
    """Make two connected :class:`PipeStream` ends.

    At the bound ``send_all`` waits until the peer reads, so a peer that stops reading stalls its
    writer: the backpressure of a TCP connection, without sockets or wall-clock time.

    Args:
        max_bytes: the unread bytes each direction buffers at most (64 KiB).

    Returns:
        The two ends.

    Raises:
        ValueError: *max_bytes* is less than 1.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, got {max_bytes!r}")
    a_to_b, b_to_a = _Direction(max_bytes), _Direction(max_bytes)
    return PipeStream(a_to_b, b_to_a), PipeStream(b_to_a, a_to_b)
