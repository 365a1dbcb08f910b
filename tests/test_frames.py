"""Frame encoding, checked against wsproto's parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from trionos._frames import OP_CLOSE, OP_TEXT, close_payload, encode_frame, is_close_frame, message_frame


def parse(data: bytes, *, client: bool) -> list[tuple[Opcode, bytes | str | tuple[int, str]]]:
    # A server parses masked client frames; a client parses unmasked server frames.
    proto = FrameProtocol(client=not client, extensions=[])
    proto.receive_bytes(data)
    return [(frame.opcode, frame.payload) for frame in proto.received_frames()]


@given(st.text(max_size=300) | st.binary(max_size=70_000), st.booleans())
def test_message_frames_parse_back(message: str | bytes, masked: bool) -> None:
    """Every text or binary frame we build is read back unchanged by wsproto, masked or not."""
    frames = parse(message_frame(message, masked=masked), client=masked)
    assert len(frames) == 1
    opcode, payload = frames[0]
    assert opcode == (Opcode.TEXT if isinstance(message, str) else Opcode.BINARY)
    assert payload == message


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_length_encodings(size: int) -> None:
    """The 7-bit, 16-bit and 64-bit length forms are chosen at their boundaries."""
    frame = encode_frame(OP_TEXT, b"a" * size)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)


def test_close_payload_is_truncated_on_a_character_boundary() -> None:
    """A long reason is cut to fit a control frame without splitting a UTF-8 character."""
    payload = close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    payload[2:].decode("utf-8")
    assert is_close_frame(encode_frame(OP_CLOSE, payload))
    assert not is_close_frame(message_frame("x"))


def test_message_frame_rejects_other_types() -> None:
    """Only str and bytes are messages."""
    with pytest.raises(TypeError, match="must be str or bytes, got int"):
        message_frame(3)  # type: ignore[arg-type]
