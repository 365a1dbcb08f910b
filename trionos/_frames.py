"""WebSocket frame encoding (RFC 6455 section 5.2), pure and free of I/O.

websockets' Sans-I/O core parses every inbound frame. Outbound data frames are built here
instead, because a broadcast frame is encoded once and the same bytes go to every recipient:
server frames are unmasked, so they are identical for every connection.
"""

from __future__ import annotations

import os
import struct

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "close_payload",
    "encode_frame",
    "is_close_frame",
    "message_frame",
    "split_frames",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_FIN = 0x80
_MASK_BIT = 0x80


#: The header of every unmasked text frame with a payload under 126 bytes, by payload length.
_SHORT_TEXT_HEADS = tuple(bytes((_FIN | OP_TEXT, size)) for size in range(126))


def _mask(payload: bytes, key: bytes) -> bytes:
    # One big-integer XOR is far faster in CPython than a per-byte loop.
    size = len(payload)
    if size == 0:
        return payload
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")


def encode_frame(opcode: int, payload: bytes, *, masked: bool = False) -> bytes:
    """Encode one complete (FIN) frame.

    Args:
        opcode: the frame's opcode, e.g. :data:`OP_TEXT`.
        payload: the frame's payload (control frames: at most 125 bytes).
        masked: mask the payload with a fresh random key; client frames must be (RFC 6455 5.3).

    Returns:
        The frame's bytes, header included.
    """
    size = len(payload)
    mask_bit = _MASK_BIT if masked else 0
    first = _FIN | opcode
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if masked:
        key = os.urandom(4)
        return header + key + _mask(payload, key)
    return header + payload


def message_frame(message: str | bytes, *, masked: bool = False) -> bytes:
    """Encode *message* as one frame: a text frame for ``str``, a binary frame for ``bytes``.

    Args:
        message: the message (``bytearray`` and ``memoryview`` count as binary).
        masked: mask it, as a client must.

    Returns:
        The frame's bytes.

    Raises:
        TypeError: *message* is neither text nor bytes.
    """
    if isinstance(message, str):
        payload = message.encode("utf-8")
        if not masked and len(payload) < 126:  # the common server frame: its header from a table
            return _SHORT_TEXT_HEADS[len(payload)] + payload
        return encode_frame(OP_TEXT, payload, masked=masked)
    if isinstance(message, bytes | bytearray | memoryview):
        return encode_frame(OP_BINARY, bytes(message), masked=masked)
    raise TypeError(f"a WebSocket message must be str or bytes, got {type(message).__name__}")


def close_payload(code: int, reason: str = "") -> bytes:
    """Encode the body of a close frame.

    Args:
        code: the close code.
        reason: the reason, cut to fit the 125-byte control frame limit (never mid-character).

    Returns:
        The code in two bytes, then the reason in UTF-8.
    """
    encoded = reason.encode("utf-8")[:123]
    # Cutting may split a multi-byte character; drop the broken tail rather than send invalid UTF-8.
    encoded = encoded.decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + encoded


def is_close_frame(data: bytes | bytearray | memoryview) -> bool:
    """Tell whether *data* starts with a close frame (used to stop data frames after a close).

    Args:
        data: the start of one or more frames.

    Returns:
        True for a close frame.
    """
    return len(data) > 0 and (data[0] & 0x0F) == OP_CLOSE


def split_frames(data: bytes) -> list[tuple[int, memoryview, memoryview]] | None:
    """Split *data* into the unmasked frames built here back to back.

    The hub's fan-out joins consecutive frames into one write, so a buffer handed to a
    transport may hold several (the deflater compresses each on its own).

    Args:
        data: one or several whole unmasked frames.

    Returns:
        ``(first byte, whole frame, payload)`` for each frame, or None when *data* is not
        whole unmasked frames.
    """
    view = memoryview(data)
    frames = []
    position, end = 0, len(data)
    while position < end:
        if end - position < 2 or data[position + 1] & _MASK_BIT:
            return None
        size, offset = data[position + 1] & 0x7F, 2
        if size == 126:
            size, offset = int.from_bytes(data[position + 2 : position + 4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(data[position + 2 : position + 10], "big"), 10
        stop = position + offset + size
        if stop > end:
            return None
        frames.append((data[position], view[position:stop], view[position + offset : stop]))
        position = stop
    return frames
