"""permessage-deflate (RFC 7692): the settings trionos negotiates, and compress-once for broadcasts.

A server with ``compression="deflate"`` negotiates ``server_no_context_takeover`` and
``client_no_context_takeover``: every message is compressed, and decompressed, on its own. That
costs a little ratio (bench/bench_deflate.py: a 4 KiB JSON document still shrinks to ~11 %),
and buys two things:

* a broadcast frame is compressed **once** and the same bytes go to every compressed recipient
  (:class:`Deflater` keeps the last result), as the uncompressed frame does to the others;
* an idle connection holds no zlib state at all (a compressor with context takeover would keep
  tens of KiB per connection).

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


def server_extensions(compression: str | None) -> Sequence[ServerExtensionFactory] | None:
    """The extension factories a server negotiates with for *compression*.

    Args:
        compression: ``None`` (off) or ``"deflate"``.

    Returns:
        None when off; else permessage-deflate without context takeover either way.

    Raises:
        ValueError: *compression* is not a known choice.
    """
    check_compression(compression)
    if compression is None:
        return None
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

    The result for the last frame is kept, so a broadcast written to many recipients is
    compressed once. Control frames, short payloads and frames that are not ours pass unchanged.
    """

    __slots__ = ("_encoder", "_last", "_last_result")

    def __init__(self, window_bits: int) -> None:
        # No context takeover on either side: every message starts a fresh compressor.
        self._encoder = PerMessageDeflate(True, True, 15, window_bits, {"memLevel": MEM_LEVEL})
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
            parts: list[bytes | memoryview] = []
            for first, whole, payload in frames:
                if self._worth_it(first, payload):
                    opcode = Opcode(first & 0x0F)
                    parts.append(Frame(opcode, payload).serialize(mask=False, extensions=[self._encoder]))
                else:
                    parts.append(whole)
            result = b"".join(parts)
        self._last, self._last_result = frame, result
        return result

    @staticmethod
    def _worth_it(first: int, payload: memoryview) -> bool:
        # Only complete (FIN) text and binary frames without reserved bits, and long enough.
        return first in (0x80 | OP_TEXT, 0x80 | OP_BINARY) and len(payload) >= MIN_COMPRESSED_SIZE
