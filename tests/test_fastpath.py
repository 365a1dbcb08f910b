"""The fast path against websockets' core alone: same messages, replies, closes and state, always.

The differential property: arbitrary sequences of valid and invalid frames (data, control,
fragmented, oversized, bad UTF-8 split across fragments, reserved bits, wrong masking, close
mid-message, bytes after a close, compressed frames under permessage-deflate), cut into reads at
arbitrary points, are fed to a core with the fast path and to one without it. After every read
both must have produced the same messages, the same bytes to send, the same frame count and
the same state, close codes and reasons; and at the end of the stream too.

``make test`` runs a few hundred examples; ``make test-all`` (nox) selects the ``thorough``
Hypothesis profile (tests/conftest.py), which runs thousands.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame
from websockets.protocol import OPEN
from websockets.typing import ExtensionName
from websockets.uri import parse_uri

from tests.helpers import imports_loaded
from trionos._fastpath import ClientCore, MessageCore, ProtocolLog, ServerCore, frame_size
from trionos._frames import encode_frame, message_frame

#: The message size limit of the cores under test: small, so that oversized frames are common.
MAX_SIZE = 200

EXAMPLES = max(400, settings().max_examples)

DIFFERENTIAL = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def core(server: bool, *, fast: bool, deflate: bool, takeover: bool = False) -> MessageCore:
    """An open core of either role; with ``deflate``, permessage-deflate as negotiated.

    ``takeover``: the peer keeps its compression context (the core's decompressor keeps its own).
    """
    made: MessageCore
    if server:
        made = ServerCore(max_size=MAX_SIZE, logger=ProtocolLog(), state=OPEN)
    else:
        made = ClientCore(parse_uri("ws://peer/"), max_size=MAX_SIZE, logger=ProtocolLog(), state=OPEN)
    if deflate:
        made.extensions = [PerMessageDeflate(not takeover, True, 15, 15)]
    made.fast_path = fast
    return made


def header(first: int, size: int, *, masked: bool, wide: int) -> bytes:
    """A frame header for *size* bytes, in the smallest length form or a wider one (``wide``)."""
    mask_bit = 0x80 if masked else 0
    if size < 126 and wide == 0:
        return bytes((first, mask_bit | size))
    if size < 1 << 16 and wide <= 1:
        return struct.pack("!BBH", first, mask_bit | 126, size)
    return struct.pack("!BBQ", first, mask_bit | 127, size)


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool,
    wide: int = 0,
    key: bytes = b"\x00\x00\x00\x00",
) -> bytes:
    """One frame as a peer would send it, reserved bits and masking as given."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    head = header(first, len(payload), masked=masked, wide=wide)
    if not masked:
        return head + payload
    body = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return head + key + body


def deflated(payload: bytes) -> bytes:
    """*payload* compressed as permessage-deflate sends it (no context takeover)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


texts = st.text(max_size=80)
sizes_around_the_limit = st.integers(min_value=MAX_SIZE - 3, max_value=MAX_SIZE + 3)


@st.composite
def frames(draw: st.DrawFn, peer_masks: bool) -> list[bytes]:
    """One unit of the stream: a frame, or the frames of one fragmented message."""
    right = peer_masks  # the masking this side's peer must use
    # Most units are well formed, so that what comes after them is still read; one in ten
    # breaks a rule of the frame itself, and some kinds break other rules.
    faulty = draw(st.integers(0, 9)) == 0
    masked = right if not faulty else draw(st.booleans())
    rsv = 0 if not faulty else draw(st.sampled_from([0, 1, 2, 3, 4]))
    key = draw(st.binary(min_size=4, max_size=4))
    wide = draw(st.sampled_from([0] * 6 + [1, 2]))

    def one(opcode: int, payload: bytes, fin: bool = True, bits: int = rsv) -> bytes:
        return frame(opcode, payload, fin=fin, rsv=bits, masked=masked, wide=wide, key=key)

    kind = draw(
        st.sampled_from(
            ["text"] * 6
            + ["binary"] * 3
            + ["oversized"] * 3
            + ["fragmented"] * 2
            + [
                "bad_text",
                "bad_fragmented",
                "ping",
                "pong",
                "close",
                "bad_close",
                "continuation",
                "bad_opcode",
                "compressed",
                "long_control",
            ]
        )
    )
    if kind == "text":
        return [one(0x1, draw(texts).encode())]
    if kind == "binary":
        if draw(st.booleans()):
            return [one(0x2, draw(st.binary(max_size=MAX_SIZE)))]
        # A payload that looks like frames: a parser that lost its place would take them.
        inner = message_frame(draw(texts), masked=right)[: MAX_SIZE - 4]
        return [one(0x2, draw(st.binary(max_size=3)) + inner)]
    if kind == "bad_text":
        good = draw(texts).encode()
        cut = draw(st.integers(0, len(good)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]))
        return [one(0x1, good[:cut] + bad + good[cut:])]
    if kind == "oversized":
        return [one(draw(st.sampled_from([0x1, 0x2])), b"a" * draw(sizes_around_the_limit))]
    if kind in ("fragmented", "bad_fragmented"):
        text = draw(st.booleans())
        if text:
            body = draw(st.text(min_size=1, max_size=60)).encode()
            if kind == "bad_fragmented":
                at = draw(st.integers(0, len(body)))
                body = body[:at] + b"\xf0\x9f" + body[at:]  # a 4-byte sequence, cut short
        else:
            body = draw(st.binary(min_size=1, max_size=MAX_SIZE))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        parts = []
        for index, piece in enumerate(pieces):
            opcode = (0x1 if text else 0x2) if index == 0 else 0x0
            parts.append(one(opcode, piece, fin=index == len(pieces) - 1))
            if draw(st.integers(0, 5)) == 0:  # a control frame between fragments
                parts.append(one(draw(st.sampled_from([0x9, 0xA, 0x8])), b"", bits=0))
        if kind == "bad_fragmented" and draw(st.booleans()):
            parts.pop()  # never finished: the next unit interrupts it
        return parts
    if kind in ("ping", "pong"):
        return [one(0x9 if kind == "ping" else 0xA, draw(st.binary(max_size=20)))]
    if kind == "close":
        code = draw(st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999]))
        reason = draw(st.text(max_size=20)).encode()[:100]
        return [one(0x8, struct.pack("!H", code) + reason)]
    if kind == "bad_close":
        return [one(0x8, draw(st.sampled_from([b"\x03", b"\x03\xed", b"\x03\xe8\xff", b"\x00\x00"])))]
    if kind == "continuation":
        return [one(0x0, draw(st.binary(max_size=10)), fin=draw(st.booleans()))]
    if kind == "bad_opcode":
        return [one(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), b"")]
    if kind == "compressed":
        payload = draw(texts).encode() if draw(st.booleans()) else draw(st.binary(max_size=MAX_SIZE))
        return [one(draw(st.sampled_from([0x1, 0x2])), deflated(payload), bits=rsv | 4)]
    # A control frame over 125 bytes, or fragmented.
    return [one(0x9, b"p" * 126) if draw(st.booleans()) else one(0x9, b"", fin=False)]


@st.composite
def streams(draw: st.DrawFn, peer_masks: bool) -> tuple[bytes, list[int]]:
    """A byte stream of frames (sometimes with garbage bytes) and the points it is cut at."""
    units = draw(st.lists(frames(peer_masks), max_size=12))
    data = b"".join(part for unit in units for part in unit)
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(min_size=1, max_size=8))  # garbage, or a frame cut short at the end
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    return data, cuts


def unmasked(data: bytes) -> bytes:
    """*data* (whole frames) with every masked frame unmasked: a client masks with random keys."""
    out = b""
    pos = 0
    while pos < len(data):
        size = frame_size(data, pos)
        whole = data[pos : pos + size]
        if whole[1] & 0x80:
            key_at = {126: 4, 127: 10}.get(whole[1] & 0x7F, 2)
            key = whole[key_at : key_at + 4]
            body = bytes(byte ^ key[index % 4] for index, byte in enumerate(whole[key_at + 4 :]))
            whole = whole[:key_at] + body
        out += whole
        pos += size
    return out


def observe(made: MessageCore) -> dict[str, Any]:
    """What the outside world sees of a core (its messages are taken, its output drained)."""
    messages = list(made.inbox)
    made.inbox.clear()
    close_sent = made.close_sent
    close_rcvd = made.close_rcvd
    assert made.is_open is (made.state is OPEN), "is_open follows every change of state"
    return {
        "messages": messages,
        "to_send": [unmasked(data) for data in made.data_to_send()],
        "state": made.state,
        "close_sent": None if close_sent is None else (int(close_sent.code), close_sent.reason),
        "close_rcvd": None if close_rcvd is None else (int(close_rcvd.code), close_rcvd.reason),
        "close_rcvd_then_sent": made.close_rcvd_then_sent,
        "eof_sent": made.eof_sent,
        "bytes_in": made.bytes_in,
    }


def run_both(server: bool, deflate: bool, data: bytes, cuts: list[int], takeover: bool = False) -> None:
    fast = core(server, fast=True, deflate=deflate, takeover=takeover)
    reference = core(server, fast=False, deflate=deflate, takeover=takeover)
    for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
        chunk: bytes | bytearray = data[start:stop]
        if not chunk:
            continue
        if start % 2:
            chunk = bytearray(chunk)  # TLS and in-memory streams read bytearrays
        fast_frames = fast.feed(chunk)
        if not fast.core_fed:
            assert fast.data_to_send() == [], "the fast path alone must have nothing to send"
        assert fast_frames == reference.feed(chunk)
        assert observe(fast) == observe(reference), f"after bytes {start}:{stop} of {data!r}"
    fast.receive_eof()
    reference.receive_eof()
    assert observe(fast) == observe(reference), f"at the end of {data!r}"


@DIFFERENTIAL
@given(st.booleans(), st.sampled_from(["off", "deflate", "takeover"]), st.data())
def test_the_fast_path_is_the_core(server: bool, compression: str, data: st.DataObject) -> None:
    """Any frames, cut anywhere, either role: the fast path and the core alone agree after every read."""
    stream, cuts = data.draw(streams(peer_masks=server))
    run_both(server, compression != "off", stream, cuts, takeover=compression == "takeover")


@DIFFERENTIAL
@given(
    st.booleans(),
    st.lists(st.text(max_size=300) | st.binary(max_size=300), max_size=20),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_well_formed_traffic_cut_anywhere(server: bool, messages: list[str | bytes], cuts: list[int]) -> None:
    """Valid messages of every length form (some over the limit), cut into reads anywhere: both agree."""
    stream = b"".join(message_frame(message, masked=server) for message in messages)
    run_both(server, False, stream, sorted({cut % (len(stream) + 1) for cut in cuts}))


def counting_parser(made: MessageCore) -> list[int]:
    """Count the bytes the core's own parser receives."""
    fed = [0]
    original: Callable[[bytes | bytearray], None] = made.receive_data

    def receive_data(data: bytes | bytearray) -> None:
        fed[0] += len(data)
        original(data)

    made.receive_data = receive_data  # type: ignore[method-assign]
    return fed


@pytest.mark.parametrize("server", [True, False])
def test_common_frames_bypass_the_parser(server: bool) -> None:
    """Whole text and binary frames within the limit never reach websockets' parser."""
    made = core(server, fast=True, deflate=True)
    fed = counting_parser(made)
    messages: list[str | bytes] = ["hello", b"\x00\x01", "é" * 60, b"x" * MAX_SIZE, ""]
    for message in messages:
        assert made.feed(message_frame(message, masked=server)) == 1
    assert made.inbox == messages
    assert fed == [0]
    assert not made.core_fed


@settings(max_examples=EXAMPLES // 2, deadline=None, database=None)
@given(
    st.booleans(),
    st.lists(st.text(max_size=MAX_SIZE // 4) | st.binary(max_size=MAX_SIZE), min_size=1, max_size=20),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_the_parser_gets_only_the_frames_a_read_cuts(
    server: bool, messages: list[str | bytes], cuts: list[int]
) -> None:
    """With common frames only, the parser gets exactly the frames a read boundary falls inside."""
    encoded = [message_frame(message, masked=server) for message in messages]
    stream = b"".join(encoded)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    made = core(server, fast=True, deflate=False)
    fed = counting_parser(made)
    for start, stop in zip([0, *points], [*points, len(stream)], strict=True):
        made.feed(stream[start:stop])
    assert made.inbox == messages
    starts = [sum(map(len, encoded[:index])) for index in range(len(encoded))]
    cut_inside = [
        len(whole)
        for begin, whole in zip(starts, encoded, strict=True)
        if any(begin < point < begin + len(whole) for point in points)
    ]
    assert fed == [sum(cut_inside)]


def test_a_frame_cut_in_two_goes_to_the_parser_then_the_fast_path_resumes() -> None:
    """The parser finishes the frame it started; the frames after it are the fast path's again."""
    made = core(True, fast=True, deflate=False)
    fed = counting_parser(made)
    first = message_frame("first message", masked=True)
    second = message_frame("second", masked=True)
    made.feed(first[:5])
    made.feed(first[5:] + second)
    assert made.inbox == ["first message", "second"]
    assert fed == [len(first)]


def test_a_bad_frame_and_everything_after_it_go_to_the_parser() -> None:
    """Invalid UTF-8 gets the core's 1007, and a frame behind it in the same read is not taken."""
    made = core(True, fast=True, deflate=False)
    fed = counting_parser(made)
    bad = encode_frame(0x1, b"ok \xff", masked=True)
    behind = message_frame("never delivered", masked=True)
    made.feed(message_frame("before", masked=True) + bad + behind)
    assert made.inbox == ["before"]
    assert fed == [len(bad) + len(behind)]
    assert made.close_sent is not None
    assert (made.close_sent.code, made.close_sent.reason) == (1007, "invalid UTF-8 at position 3")


class Identity(Extension):
    """An extension that changes nothing, but is not permessage-deflate."""

    name = ExtensionName("x-identity")

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


def test_fast_path_off_under_debug_logging_and_unknown_extensions() -> None:
    """With DEBUG logging (the core logs each frame) or a foreign extension, every byte goes to the parser."""
    debugging = ServerCore(max_size=MAX_SIZE, logger=ProtocolLog(), state=OPEN)
    debugging.debug = True
    foreign = core(True, fast=True, deflate=False)
    foreign.extensions = [Identity()]
    for made in (debugging, foreign):
        fed = counting_parser(made)
        frame_bytes = message_frame("hi", masked=True)
        made.feed(frame_bytes)
        assert made.inbox == ["hi"]
        assert fed == [len(frame_bytes)]


@given(st.binary(max_size=70_000), st.booleans())
def test_frame_size_is_the_length_of_the_frame(payload: bytes, masked: bool) -> None:
    """frame_size reads the whole frame's length from its header, and -1 from a cut header."""
    whole = encode_frame(0x2, payload, masked=masked)
    assert frame_size(whole, 0) == len(whole)
    head = len(whole) - len(payload) - (4 if masked else 0)
    assert frame_size(whole[: head - 1], 0) == -1


def test_the_fast_path_imports_no_trio() -> None:
    """trionos._fastpath is pure: importing it (and what it imports) loads no trio."""
    assert imports_loaded("trionos._fastpath", ("trio",)) == []


def test_frame_remainder_says_what_the_parser_still_needs() -> None:
    """After the start of a large frame, frame_remainder is the rest of it; at a boundary, 0."""
    made = ClientCore(parse_uri("ws://peer/"), max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
    whole = message_frame(b"z" * 100_000)
    made.feed(whole[:4096])
    assert made.frame_remainder == len(whole) - 4096
    made.feed(whole[4096:50_000])
    assert made.frame_remainder == len(whole) - 50_000
    made.feed(whole[50_000:])
    assert made.frame_remainder == 0
    assert made.inbox == [b"z" * 100_000]
