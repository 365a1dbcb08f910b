"""Base64 helpers for sending bytes inside JSON text messages (text-only transports, typed protocols).

The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

import base64
import binascii

from ._errors import DecodeError

__all__ = ["decode_base64", "encode_base64"]


def encode_base64(data: bytes) -> str:
    """Encode bytes as standard, padded base64 text.

    Args:
        data: the bytes to carry.

    Returns:
        ASCII text, e.g. ``"AAH/"`` for ``b"\\x00\\x01\\xff"``.
    """
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode standard, padded base64 text, as :func:`~trionos.encode_base64` writes it.

    Unlike :func:`base64.b64decode`, characters outside the base64 alphabet are refused rather than
    silently skipped, so corrupted input is noticed.

    Args:
        text: base64 text, usually a field of a message from the peer.

    Returns:
        The decoded bytes.

    Raises:
        DecodeError: *text* is not a ``str``, holds a character outside the base64 alphabet, or
            is not correctly padded.
    """
    if not isinstance(text, str):
        raise DecodeError(f"expected base64 text (str), got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except UnicodeEncodeError:
        raise DecodeError(f"invalid base64: non-ASCII character in {text[:40]!r}") from None
    except binascii.Error as exc:
        raise DecodeError(f"invalid base64 ({exc}): {text[:40]!r}") from exc
