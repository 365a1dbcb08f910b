"""Inbound bytes to messages: websockets' Sans-I/O core, and a verified fast path in front of it.

websockets' core (:class:`websockets.protocol.Protocol`) parses every frame that is not for the
fast path, answers pings, handles the closing handshake and every error, as it did before the
fast path existed. trionos' message assembly (UTF-8 decoding, joining fragments, the per-frame
cost of a fragmented message) runs *inside* the core, in :meth:`MessageCore.recv_frame`, right
after websockets has checked each frame: a message that fails it fails the connection at that
frame, and the core discards whatever follows, as it does for its own errors. The core is
therefore a streaming state machine whose results do not depend on how the byte stream is cut
into reads, which is what lets the fast path hand it any frame-aligned span.

The fast path (:meth:`MessageCore.feed`) takes a frame itself only when all of these hold:

* the core is open and not inside a fragmented message, and it holds no partial frame (it
  stands at a frame boundary of the stream; :meth:`MessageCore.feed` keeps track of that from
  the headers of the bytes it handed over);
* the frame is complete in the bytes at hand, with FIN set, opcode text or binary, no reserved
  bit (RSV1 would be a compressed frame: left to the core), the mask bit the role requires, and a
  length within the core's ``max_message_size`` (and ``max_fragment_size``);
* a text payload decodes with Python's strict UTF-8 decoder;
* the core has no extension other than permessage-deflate (whose uncompressed frames pass
  through it unchanged), and its logger is not at DEBUG (the core logs every frame there).

The payload is unmasked by websockets' own C ``apply_mask`` (``websockets.speedups``, the one
``Frame.parse`` uses). Any other frame, and everything after it in the same read, goes to the core
byte for byte, so a bad frame gets exactly the core's close code and reason. Once the core is no
longer open (a close received or sent, a failure), every byte goes to it. The fast path produces
what the core would: the same messages in the same order, the same bytes to send (none: a data
frame has no reply), the same state; tests/test_fastpath.py checks this against the core alone
for arbitrary frame sequences cut at arbitrary points.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import codecs
import logging
import sys
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, State
from websockets.protocol import Protocol as SansIOProtocol
from websockets.server import ServerProtocol

try:
    # The C unmasking websockets' own Frame.parse uses (websockets.frames imports it the same way).
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "FRAME_OVERHEAD",
    "ClientCore",
    "MessageCore",
    "ProtocolLog",
    "ServerCore",
    "frame_size",
]

logger = logging.getLogger("trionos.connection")

#: Bytes charged toward ``max_message_size`` for every frame of a fragmented message, on top of
#: its payload: the header and mask of the smallest masked frame. Without it a message of empty
#: continuation frames would cost nothing however many of them came.
FRAME_OVERHEAD = 6

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_CLOSE = Opcode.CLOSE
_PING = Opcode.PING

#: websockets' ``Protocol.state`` property, which MessageCore extends.
_STATE: property = SansIOProtocol.state  # type: ignore[assignment]

# The first byte of a frame the fast path takes: FIN, no reserved bit, text or binary.
_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


class ProtocolLog:
    """The logger handed to websockets' core: its per-connection INFO lines are DEBUG here.

    websockets logs "connection open" / "connection closed" at INFO for every connection; for
    trionos those are ordinary events, logged by the server itself when they matter.
    """

    __slots__ = ("_logger",)

    def __init__(self, name: str = "trionos.protocol") -> None:
        self._logger = logging.getLogger(name)

    def isEnabledFor(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg, *args, **kwargs)

    info = debug

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg, *args, **kwargs)


def frame_size(data: bytes | bytearray, pos: int) -> int:
    """The length of the frame that starts at ``data[pos]``, header and mask included.

    Args:
        data: bytes of the stream.
        pos: where a frame starts in *data*.

    Returns:
        The frame's total length, or -1 when *data* ends before its length is known.
    """
    end = len(data)
    if end - pos < 2:
        return -1
    second = data[pos + 1]
    length = second & 0x7F
    head = 2
    if length == 126:
        if end - pos < 4:
            return -1
        length = (data[pos + 2] << 8) | data[pos + 3]
        head = 4
    elif length == 127:
        if end - pos < 10:
            return -1
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        head = 10
    if second & 0x80:
        head += 4
    return head + length


class _Fragments:
    """A message arriving in several frames: its parts so far and what it has cost."""

    __slots__ = ("cost", "decoder", "parts")

    def __init__(self, first: Frame) -> None:
        self.cost = len(first.data) + FRAME_OVERHEAD
        self.parts: list[Any] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")() if first.opcode is _TEXT else None


class MessageCore(SansIOProtocol):
    """websockets' core with trionos' message assembly, and the fast path in front of it.

    Feed bytes with :meth:`feed`; complete messages (``str`` or ``bytes``) are appended to
    :attr:`inbox` in the order they arrived, and the core's replies (pongs, a close frame) wait
    in :meth:`data_to_send` as usual. Three rules of trionos on top of websockets':

    * a close frame may arrive inside a fragmented message (RFC 6455 5.4, 5.5.1): it is answered
      and the unfinished message dropped, where websockets fails with 1002 (Autobahn 7.1.5);
    * data frames that arrive after our close frame was sent are discarded, not queued;
    * a fragmented message costs :data:`FRAME_OVERHEAD` bytes more per frame toward
      ``max_message_size`` (1009 beyond it), and invalid UTF-8 in a text message fails the
      connection with 1007 at the frame that has it.

    Set :attr:`fast_path` to False to send every byte through websockets' parser (the
    reference the differential test compares the fast path with).
    """

    # Slots, not the instance dict: websockets' core already has 26 attributes, and an instance
    # dict beyond 30 loses CPython's key sharing (1.3 KiB more per connection).
    __slots__ = (
        "_fast",
        "_fragments",
        "_limit",
        "_owed",
        "_partial_head",
        "bytes_in",
        "core_fed",
        "fast_path",
        "inbox",
        "is_open",
        "pings_received",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: ``state is OPEN``, as a plain attribute: the connection asks on every message, and
        #: websockets' ``state`` is a property (a Python call each time). Kept by the setter below.
        self.is_open = False
        super().__init__(*args, **kwargs)
        #: Messages received and not yet taken, oldest first (the caller takes them).
        self.inbox: list[str | bytes] = []
        #: Payload bytes of data frames received (the caller may reset it).
        self.bytes_in = 0
        #: True when the last :meth:`feed` handed bytes to websockets' parser (so it may have
        #: something to send).
        self.core_fed = False
        #: Whether :meth:`feed` may take frames itself (read once the connection is open).
        self.fast_path = True
        #: Protocol pings received (the caller may reset it; they only reach the core).
        self.pings_received = 0
        self._fast: bool | None = None
        self._limit = sys.maxsize
        self._fragments: _Fragments | None = None
        # Where websockets' parser stands in the stream: the bytes it still needs to finish its
        # current frame, or the start of a header whose length it does not know yet.
        self._owed = 0
        self._partial_head = b""

    def _set_state(self, state: State) -> None:
        _STATE.__set__(self, state)  # websockets' own setter (it logs the change at DEBUG)
        self.is_open = state is OPEN

    # websockets' property, with a setter that keeps ``is_open`` (every change goes through it).
    state = property(_STATE.fget, _set_state, doc=_STATE.__doc__)

    @property
    def frame_remainder(self) -> int:
        """Bytes the parser still needs to finish the frame it is inside (0 at a boundary, or not known)."""
        return self._owed

    # --- the fast path -----------------------------------------------------------------------

    def feed(self, data: bytes | bytearray) -> int:
        """Parse *data*: messages go to :attr:`inbox`, replies to :meth:`data_to_send`.

        Args:
            data: the next bytes from the peer.

        Returns:
            How many frames were parsed.
        """
        end = len(data)
        owed = self._owed
        if owed >= end:
            # All of it belongs to the frame the parser is inside (a large message arriving in
            # many reads): no boundary here, so nothing to look at or follow.
            self._owed = owed - end
            self.core_fed = True
            self.receive_data(data)
            return len(self.events_received())
        self.core_fed = False
        if not self.is_open:
            return self._to_core(data, 0)
        fast = self._fast
        if fast is None:
            # Decided once open: the extensions are known from the handshake on.
            fast = self._fast = self.fast_path and self._fast_path_allowed()
        if not fast:
            return self._to_core(data, 0)
        pos = 0
        frames = 0
        if self._owed or self._partial_head:
            # The parser is inside a frame: it gets exactly the bytes that finish it.
            need = self._to_boundary(data)
            if need < 0 or need >= end:
                return self._to_core(data, 0)
            frames = self._to_core(data[:need], 0)
            pos = need
            if not self.is_open:
                return frames + self._to_core(data, pos)
        if self.current_size is not None:
            return frames + self._to_core(data, pos)  # inside a fragmented message
        inbox = self.inbox
        before = len(inbox)
        limit = self._limit
        masked = self.side is SERVER
        # The fast path: one complete data frame per turn.
        while end - pos >= 2:
            first = data[pos]
            if first != _FIN_TEXT and first != _FIN_BINARY:
                break
            second = data[pos + 1]
            if (second >= 0x80) is not masked:
                break
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            if length > limit:
                break
            if masked:
                stop = start + 4 + length
                if stop > end:
                    break
                payload = apply_mask(data[start + 4 : stop], data[start : start + 4])
            else:
                stop = start + length
                if stop > end:
                    break
                payload = bytes(data[start:stop])
            if first == _FIN_TEXT:
                try:
                    inbox.append(payload.decode())
                except UnicodeDecodeError:
                    break  # the core fails it with its exact close code and reason
            else:
                inbox.append(payload)
            self.bytes_in += length
            pos = stop
        frames += len(inbox) - before
        if pos == end:
            return frames
        # Not a frame for the fast path: it and the rest of this read go to the core, byte for
        # byte, as they would without a fast path.
        return frames + self._to_core(data, pos)

    def _fast_path_allowed(self) -> bool:
        """Whether frames may bypass the parser: no extension but permessage-deflate, no DEBUG log."""
        if self.debug or not all(isinstance(ext, PerMessageDeflate) for ext in self.extensions):
            return False
        # One frame limit for the fast path: the core's max_message_size and max_fragment_size.
        limits = [size for size in (self.max_message_size, self.max_fragment_size) if size is not None]
        self._limit = min(limits, default=sys.maxsize)
        return True

    def parsed_behind_handshake(self, data: bytes | bytearray) -> None:
        """Tell the fast path which bytes the parser got behind the handshake (client side).

        The client's core parses the response and whatever frames came right behind it in one
        go; from these bytes the fast path learns where the parser stands.

        Args:
            data: the bytes after the end of the response head.
        """
        if self.state is OPEN:
            self._fast = self.fast_path and self._fast_path_allowed()
            if self._fast:
                self._track(data)

    def _to_core(self, data: bytes | bytearray, pos: int) -> int:
        """Hand ``data[pos:]`` to websockets' parser and keep track of where it stands."""
        chunk = data[pos:] if pos else data
        self.core_fed = True
        self.receive_data(chunk)
        frames = len(self.events_received())
        if self._fast and self.is_open:
            self._track(chunk)
        return frames

    def _to_boundary(self, data: bytes | bytearray) -> int:
        """How many bytes of *data* finish the parser's current frame (-1: not known yet)."""
        if self._partial_head:
            size = frame_size(self._partial_head + data[:14], 0)
            return size if size < 0 else size - len(self._partial_head)
        return self._owed

    def _track(self, chunk: bytes | bytearray) -> None:
        """Follow the frame headers of ``chunk``, which the parser just received."""
        end = len(chunk)
        pos = self._owed
        if self._partial_head:
            chunk = self._partial_head + chunk
            end = len(chunk)
            self._partial_head = b""
        elif pos >= end:
            self._owed = pos - end
            return
        while True:
            size = frame_size(chunk, pos)
            if size < 0:
                self._owed = 0
                self._partial_head = bytes(chunk[pos:])
                return
            pos += size
            if pos >= end:
                self._owed = pos - end
                return

    # --- the message assembly, inside the core ------------------------------------------------

    def recv_frame(self, frame: Frame) -> None:
        """websockets' frame handling, then trionos' message assembly for data frames."""
        opcode = frame.opcode
        if opcode is _PING:
            self.pings_received += 1
        elif opcode is _CLOSE and self.current_size is not None:
            # A close inside a fragmented message is answered (see the class docstring).
            self.current_size = None
            self._fragments = None
        super().recv_frame(frame)
        if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
            self._data_frame(frame)

    def _data_frame(self, frame: Frame) -> None:
        if self.close_sent is not None:
            # Once our close frame is out, nobody will read data: it is discarded, not queued
            # (a peer that keeps sending while we wait for its close would fill memory).
            return
        opcode = frame.opcode
        self.bytes_in += len(frame.data)
        fragments = self._fragments
        if opcode is _CONT:
            assert fragments is not None  # websockets checked the sequence (1002 otherwise)
            fragments.cost += len(frame.data) + FRAME_OVERHEAD
            max_size = self.max_message_size
            if max_size is not None and fragments.cost > max_size:
                self._fragments = None
                self._fail(
                    1009,
                    f"fragmented message over {max_size} bytes "
                    f"(each frame counts {FRAME_OVERHEAD} bytes more than its payload)",
                )
                return
        elif frame.fin:
            if opcode is _TEXT:
                try:
                    message: str | bytes = str(frame.data, "utf-8")
                except UnicodeDecodeError as exc:
                    self._fail(1007, f"invalid UTF-8 at position {exc.start}")
                    return
            else:
                message = bytes(frame.data)
            self.inbox.append(message)
            return
        else:
            fragments = self._fragments = _Fragments(frame)
        if fragments.decoder is not None:
            try:
                fragments.parts.append(fragments.decoder.decode(frame.data, frame.fin))
            except UnicodeDecodeError as exc:
                self._fragments = None
                self._fail(1007, f"invalid UTF-8 in a fragmented message: {exc.reason}")
                return
        else:
            fragments.parts.append(frame.data)
        if frame.fin:
            self._fragments = None
            parts = fragments.parts
            self.inbox.append("".join(parts) if fragments.decoder is not None else b"".join(parts))

    def _fail(self, code: int, reason: str) -> None:
        # Inside the parser: fail() makes it discard the rest of the stream, as for its own errors.
        logger.debug("failing the connection with %d: %s", code, reason)
        self.fail(code, reason)


class ServerCore(MessageCore, ServerProtocol):
    """websockets' server core, with trionos' message assembly and the fast path."""

    __slots__ = ()


class ClientCore(MessageCore, ClientProtocol):
    """websockets' client core, with trionos' message assembly and the fast path."""

    __slots__ = ()
