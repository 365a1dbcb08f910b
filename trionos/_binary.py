"""Base64 helpers for sending bytes over text-only transports (the seed's binary pattern)."""

from __future__ import annotations

import base64
import binascii

from ._errors import DecodeError

__all__ = ["decode_base64", "encode_base64"]


def encode_base64(data: bytes) -> str:
    """Encode bytes as standard, padded base64 text."""
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode standard base64 text; raise :class:`DecodeError` on anything else.

    Unlike :func:`base64.b64decode`, characters outside the base64 alphabet are refused rather than
    silently skipped, so corrupted input is noticed.
    """
    if not isinstance(text, str):
        raise DecodeError(f"expected base64 text (str), got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except UnicodeEncodeError:
        raise DecodeError(f"invalid base64: non-ASCII character in {text[:40]!r}") from None
    except binascii.Error as exc:
        raise DecodeError(f"invalid base64 ({exc}): {text[:40]!r}") from exc
