"""Exact closes: every protocol fault gets its close frame (right code) before TCP closes."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import ServeFn, echo_handler, raw_websocket_peer, read_all
from trionos._frames import OP_TEXT, encode_frame
from trionos.testing import open_memory_server, open_raw_peer

OP_CONT = 0x0


def raw_frame(first: int, payload: bytes = b"", *, masked: bool = True) -> bytes:
    """A frame with a first byte of our choosing (FIN, RSV bits, opcode), masked with a zero key."""
    assert len(payload) < 126
    if masked:
        return bytes((first, 0x80 | len(payload))) + b"\0\0\0\0" + payload
    return bytes((first, len(payload))) + payload


def close_code_in(stream: bytes) -> int | None:
    """The code of the first close frame in a stream of unmasked server frames."""
    while len(stream) >= 2:
        opcode, size, offset = stream[0] & 0x0F, stream[1] & 0x7F, 2
        if size == 126:
            size, offset = struct.unpack("!H", stream[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", stream[2:10])[0], 10
        if opcode == 0x8:
            return int(struct.unpack("!H", stream[offset : offset + 2])[0])
        stream = stream[offset + size :]
    return None


async def close_after(server: trionos.Server, data: bytes) -> int | None:
    """Send ``data`` after the handshake; return the close code the server sent before TCP closed."""
    stream = await raw_websocket_peer(server.port)
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(10):
            return close_code_in(await read_all(stream))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(raw_frame(0x81, b"hi", masked=False), 1002, id="unmasked"),
        pytest.param(raw_frame(0xC1, b"hi"), 1002, id="rsv1-without-extension"),
        pytest.param(raw_frame(0xA1, b"hi"), 1002, id="rsv2"),
        pytest.param(raw_frame(0x83, b"hi"), 1002, id="reserved-opcode"),
        pytest.param(raw_frame(0x80 | OP_CONT, b"hi"), 1002, id="continuation-without-start"),
        pytest.param(raw_frame(0x01, b"a") + raw_frame(0x81, b"b"), 1002, id="new-message-inside-fragmented"),
        pytest.param(raw_frame(0x09, b""), 1002, id="fragmented-ping"),
        pytest.param(raw_frame(0x81, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            raw_frame(0x01, b"ok") + raw_frame(0x80, b"\xc3\x28"), 1007, id="invalid-utf8-fragmented"
        ),
        pytest.param(raw_frame(0x88, b"\x03\xe8\xff"), 1007, id="invalid-utf8-close-reason"),
    ],
)
async def test_protocol_faults_get_their_close_code(start_server: ServeFn, data: bytes, code: int) -> None:
    """Protocol errors get 1002 and invalid UTF-8 gets 1007, as a close frame before TCP closes."""
    server = await start_server(echo_handler)
    assert await close_after(server, data) == code


async def test_messages_before_a_fault_still_reach_the_handler(start_server: ServeFn) -> None:
    """Frames that arrived whole before the bad one are received; the bad one closes with 1007."""
    received: list[str | bytes] = []
    errors: list[int] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            async for message in ws:
                received.append(message)
        except trionos.ConnectionClosed as exc:
            errors.append(exc.code)

    server = await start_server(handler)
    assert await close_after(server, raw_frame(0x82, b"kept") + raw_frame(0x81, b"\xff")) == 1007
    with trio.fail_after(10):
        while server.active_streams:
            await trio.testing.wait_all_tasks_blocked()
    assert received == [b"kept"]
    assert errors == [1007]


async def test_too_big_gets_1009_on_the_wire(start_server: ServeFn) -> None:
    """An oversize frame header alone is enough for a 1009 close frame."""
    server = await start_server(echo_handler, max_message_size=1000)
    header = struct.pack("!BBH", 0x82, 0x80 | 126, 1001) + b"\0\0\0\0"
    assert await close_after(server, header) == 1009


async def test_empty_continuations_cannot_bypass_the_message_limit(start_server: ServeFn) -> None:
    """Each frame of a fragmented message counts toward max_message_size: empty ones end in 1009."""
    server = await start_server(echo_handler, max_message_size=1000)
    # 1000 bytes at 6 bytes per empty frame: the 167th crosses the limit; 10,000 are sent.
    flood = raw_frame(0x01, b"x") + raw_frame(OP_CONT) * 10_000
    assert await close_after(server, flood) == 1009


async def test_a_long_fragmented_message_within_the_limit_is_whole(start_server: ServeFn) -> None:
    """Many small fragments (as Autobahn 9.* sends) are fine while payload plus overhead fits."""
    server = await start_server(echo_handler, max_message_size=100_000)
    stream = await raw_websocket_peer(server.port)
    async with stream:
        frames = [raw_frame(OP_TEXT, b"a")] + [raw_frame(OP_CONT, b"b")] * 5000 + [raw_frame(0x80, b"c")]
        await stream.send_all(b"".join(frames))
        expected = encode_frame(OP_TEXT, ("Echo: a" + "b" * 5000 + "c").encode())
        received = b""
        with trio.fail_after(10):
            while len(received) < len(expected):
                received += await stream.receive_some(65536)
    assert received == expected


async def test_flood_of_tiny_frames_lets_other_connections_run(start_server: ServeFn) -> None:
    """Parsing one connection's big read of tiny frames yields to others between slices."""
    server = await start_server(echo_handler, max_message_size=10_000_000)
    stream = await raw_websocket_peer(server.port)
    async with stream:
        await stream.send_all(raw_frame(0x01, b"x") + raw_frame(OP_CONT) * 20_000)
        async with trionos.connect(server.url) as ws:
            await ws.send("fair")
            with trio.fail_after(10):
                assert await ws.recv() == "Echo: fair"


@pytest.mark.parametrize(
    "key",
    [b"", b"not base64!", b"c2hvcnQ=", b"dGhlIHNhbXBsZSBub25jZQ==dGhl"],
    ids=["empty", "not-base64", "too-short", "too-long"],
)
async def test_a_bad_websocket_key_gets_400(start_server: ServeFn, key: bytes) -> None:
    """Sec-WebSocket-Key must be base64 of 16 bytes (RFC 6455 4.2.1): anything else gets 400."""
    called = trio.Event()

    async def handler(req: trionos.Request) -> None:
        called.set()
        await req.accept()

    server = await start_server(handler)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
        )
        with trio.fail_after(10):
            response = await read_all(stream)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert not called.is_set()


async def test_close_handshake_is_bounded_by_close_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that never answers the close frame is cut after close_timeout, not later."""
    done = trio.Event()
    closed_at: list[float] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        start = trio.current_time()
        await ws.close(1000)
        closed_at.append(trio.current_time() - start)
        done.set()

    async with open_memory_server(handler, heartbeat=None, close_timeout=3) as server:
        async with open_raw_peer(server) as peer:  # reads nothing, answers nothing
            await done.wait()
            assert peer is not None
    assert closed_at == [3]


async def test_a_long_close_reason_is_cut_to_fit(start_server: ServeFn) -> None:
    """close() with a reason longer than a control frame holds sends it cut at a character boundary."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        await ws.close(4000, "é" * 100)

    server = await start_server(handler)
    async with trionos.connect(server.url) as ws:
        with pytest.raises(trionos.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.code == 4000
    assert info.value.reason == "é" * 61


class _EndTimer:
    """A handler that reads until the connection ends and notes when it ended (virtual time)."""

    def __init__(self) -> None:
        self.ended_at: float | None = None
        self.ended = trio.Event()

    async def __call__(self, request: trionos.Request) -> None:
        ws = await request.accept()
        try:
            async for _ in ws:
                pass
        finally:
            self.ended_at = trio.current_time()
            self.ended.set()


async def test_the_idle_deadline_follows_the_last_bytes(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that talks for 5 minutes, then stops (pongs too), is cut 60 to 60.25 s after its last bytes."""
    timer = _EndTimer()
    heartbeat = trionos.Heartbeat(interval=30, timeout=60)
    async with (
        open_memory_server(timer, heartbeat=heartbeat) as server,
        open_raw_peer(server, answer_pings=False) as peer,
    ):
        for _ in range(300):
            await peer.send("tick")
            await trio.sleep(1)
        last = trio.current_time() - 1
        await timer.ended.wait()
        assert timer.ended_at is not None
        assert 60 <= timer.ended_at - last <= 60.25
