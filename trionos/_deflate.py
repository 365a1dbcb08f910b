"""permessage-deflate (RFC 7692): the settings trionos negotiates, and compress-once for broadcasts.

By default a server with ``compression="deflate"`` negotiates ``server_no_context_takeover`` and
``client_no_context_takeover``: every message is compressed, and decompressed, on its own. That
costs a little ratio (bench/bench_deflate.py: a 4 KiB JSON document still shrinks to ~11 %),
and buys two things:

* a broadcast frame is compressed **once** and the same bytes go to every compressed recipient
  (:class:`Deflater` keeps the last result), as the uncompressed frame does to the others;
* an idle connection holds no zlib state at all.

With ``compression_context_takeover=True`` both sides keep their compression context for the
connection's life (windows of :data:`SERVER_MAX_WINDOW_BITS` both ways, as websockets' defaults):
no compressor is built per message and similar messages compress better, at the price of the
zlib state each connection keeps (the negotiated extension's, made by websockets at the
handshake) and of one compression per recipient for a broadcast. A context-takeover
:class:`Deflater` must see every data frame exactly once and in the order they go out: the
transport compresses them on their way into the socket, never before queueing (a queued frame
may still be dropped).

Compression and decompression run through websockets' public ``PerMessageDeflate`` extension;
the frame bytes are ours (:mod:`._frames`). Pure: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.extensions.base import ClientExtensionFactory, ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode

from ._frames import OP_BINARY, OP_TEXT, split_frames

__all__ = [
    "COMPRESSION_CHOICES",
    "MEM_LEVEL",
    "MIN_COMPRESSED_SIZE",
    "SERVER_MAX_WINDOW_BITS",
    "Deflater",
    "check_compression",
    "client_extensions",
    "server_extensions",
]

#: What ``compression=`` accepts: off, or permessage-deflate.
COMPRESSION_CHOICES = (None, "deflate")
#: The server's window, unless a client asks for less. Without context takeover the window barely
#: changes ratio or CPU (bench/bench_deflate.py); 12 is websockets' default too.
SERVER_MAX_WINDOW_BITS = 12
#: zlib's memLevel for the compressor (its memory is per message, freed after it).
MEM_LEVEL = 5
#: Payloads shorter than this go out uncompressed (RSV1 clear, which RFC 7692 allows): deflate
#: saves a few bytes at best on them, for several microseconds each.
MIN_COMPRESSED_SIZE = 64


def check_compression(compression: str | None) -> None:
    """Check a ``compression=`` argument.

    Args:
        compression: ``None`` (off) or ``"deflate"``.

    Raises:
        ValueError: *compression* is anything else.
    """
    if compression not in COMPRESSION_CHOICES:
        raise ValueError(f"compression must be None or 'deflate', got {compression!r}")


def server_extensions(
    compression: str | None, *, context_takeover: bool = False
) -> Sequence[ServerExtensionFactory] | None:
    """The extension factories a server negotiates with for *compression*.

    Args:
        compression: ``None`` (off) or ``"deflate"``.
        context_takeover: keep the compression context on both sides (windows of
            :data:`SERVER_MAX_WINDOW_BITS` both ways); by default every message is compressed on
            its own.

    Returns:
        None when off; else permessage-deflate, without context takeover either way unless
        asked for.

    Raises:
        ValueError: *compression* is not a known choice.
    """
    check_compression(compression)
    if compression is None:
        return None
    if context_takeover:
        return [
            ServerPerMessageDeflateFactory(
                server_max_window_bits=SERVER_MAX_WINDOW_BITS,
                client_max_window_bits=SERVER_MAX_WINDOW_BITS,
                compress_settings={"memLevel": MEM_LEVEL},
            )
        ]
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=SERVER_MAX_WINDOW_BITS,
            compress_settings={"memLevel": MEM_LEVEL},
        )
    ]


def client_extensions(compression: str | None) -> Sequence[ClientExtensionFactory] | None:
    """The extension factories a client offers for *compression*.

    The client takes whatever context rules the server picks.

    Args:
        compression: ``None`` (off) or ``"deflate"``.

    Returns:
        None when off; else a permessage-deflate offer.

    Raises:
        ValueError: *compression* is not a known choice.
    """
    check_compression(compression)
    if compression is None:
        return None
    settings = {"memLevel": MEM_LEVEL}
    return [ClientPerMessageDeflateFactory(client_max_window_bits=True, compress_settings=settings)]


class Deflater:
    """Compresses our unmasked data frames for connections that negotiated ``window_bits``.

    Without context takeover (the default) one Deflater serves every connection with the same
    window, and the result for the last frame is kept, so a broadcast written to many recipients
    is compressed once. With ``context_takeover`` there is one per connection, compressing with
    the connection's own compressor; it must see each data frame exactly once, in the order they
    go out. Control frames, short payloads and frames that are not ours pass
    unchanged.
    """

    __slots__ = ("_encoder", "_last", "_last_result", "_window_bits", "context_takeover")

    def __init__(
        self, window_bits: int, *, context_takeover: bool = False, encoder: PerMessageDeflate | None = None
    ) -> None:
        """Make a compress-once Deflater, or one that keeps its context.

        Args:
            window_bits: the window the peer accepted.
            context_takeover: keep the compression context from message to message.
            encoder: with ``context_takeover``, the connection's negotiated extension, whose own
                compressor (made by websockets at the handshake, and otherwise unused: the core
                compresses no control frame) is then the only one the connection holds. Without
                it, a compressor is made on the first message worth compressing.
        """
        #: Whether this compressor keeps its context from message to message.
        self.context_takeover = context_takeover
        self._window_bits = window_bits
        # Without context takeover every message starts a fresh compressor.
        self._encoder: PerMessageDeflate | None = (
            encoder
            if context_takeover
            else PerMessageDeflate(True, True, 15, window_bits, {"memLevel": MEM_LEVEL})
        )
        self._last: bytes | None = None
        self._last_result = b""

    def compress(self, frame: bytes) -> bytes:
        """Compress the data frames in *frame* that are worth it.

        Each text or binary frame worth it is compressed on its own; the others are kept as
        they are. Anything that is not whole unmasked frames passes unchanged.

        Args:
            frame: one frame, or several joined by the hub's fan-out.

        Returns:
            The bytes to send instead (the same object when nothing changed).
        """
        if frame is self._last:
            return self._last_result
        frames = split_frames(frame)
        result = frame
        if frames is not None and any(self._worth_it(first, payload) for first, _, payload in frames):
            encoder = self._encoder
            if encoder is None:
                # Context takeover: remote_no_context_takeover=True only because this object
                # never decompresses (websockets' core does, with its own).
                encoder = self._encoder = PerMessageDeflate(
                    True, False, 15, self._window_bits, {"memLevel": MEM_LEVEL}
                )
            parts: list[bytes | memoryview] = []
            for first, whole, payload in frames:
                if self._worth_it(first, payload):
                    opcode = Opcode(first & 0x0F)
                    parts.append(Frame(opcode, payload).serialize(mask=False, extensions=[encoder]))
                else:
                    parts.append(whole)
            result = b"".join(parts)
        if not self.context_takeover:
            # Compressing the same frame again gives the same bytes: keep them for the next
            # recipient. (With context takeover the next compression depends on this one.)
            self._last, self._last_result = frame, result
        return result

    @staticmethod
    def _worth_it(first: int, payload: memoryview) -> bool:
        # Only complete (FIN) text and binary frames without reserved bits, and long enough.
        return first in (0x80 | OP_TEXT, 0x80 | OP_BINARY) and len(payload) >= MIN_COMPRESSED_SIZE
