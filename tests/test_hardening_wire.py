"""Issue #25's WebSocket-layer findings: bad heads, closing floods, inflation, pings, silent peers."""

from __future__ import annotations

import functools
import logging
import zlib

import pytest
import trio
import trio.testing
from websockets.utils import accept_key

import trionos
from tests.helpers import ServeFn, echo_handler, raw_websocket_peer, read_all
from trionos._connection import PING_LIMIT
from trionos._fastpath import frame_size
from trionos._frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, close_payload, encode_frame
from trionos._inflation import InflationBudget

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

BAD_HEADS = [
    pytest.param(b"X-Long: " + b"a" * 9000 + b"\r\n", 431, id="header-line-over-8192"),
    pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(130)), 431, id="130-headers"),
    pytest.param(b"X-Ctl: a\x01b\r\n", 400, id="control-character"),
    pytest.param(b"Sec-WebSocket-Extensions: permessage-deflate; ==\r\n", 400, id="bad-extensions"),
    pytest.param(b"Sec-WebSocket-Protocol: a b\r\n", 400, id="bad-subprotocols"),
]


@pytest.mark.parametrize(("extra", "status"), BAD_HEADS)
async def test_heads_the_websocket_core_refuses_get_a_4xx_and_no_traceback(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture, extra: bytes, status: int
) -> None:
    """A head h11 accepts but websockets refuses is answered 400/431 before the handler runs, quietly."""
    caplog.set_level(logging.DEBUG, logger="trionos")
    called: list[trionos.Request] = []

    async def handler(req: trionos.Request) -> None:
        called.append(req)
        await echo_handler(req)

    server = await start_server(handler, compression="deflate")
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(UPGRADE + extra + b"\r\n")
        response = await read_all(stream)
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert called == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    mine = [r for r in caplog.records if "bad upgrade" in r.getMessage()]
    assert len(mine) == 1 and len(mine[0].getMessage()) < 300
    reason = "head_too_large" if status == 431 else "bad_request"
    assert server.metrics.connections_refused == {reason: 1}
    async with trionos.connect(server.url) as ws:  # and the server keeps serving
        await ws.send("still here")
        assert await ws.recv() == "Echo: still here"


async def _read_until_close_frame(stream: trio.abc.Stream) -> None:
    """Read (and drop) frames until one is a close frame (the test peers send small ones)."""
    data = b""
    while True:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed before a close frame"
        data += chunk
        pos = 0
        while len(data) - pos >= 2:
            size = frame_size(data, pos)
            if size < 0 or len(data) - pos < size:
                break
            if data[pos] & 0x0F == OP_CLOSE:
                return
            pos += size
        data = data[pos:]


async def test_data_after_the_server_sent_its_close_is_discarded(start_server: ServeFn) -> None:
    """Frames a client sends while the server waits for its close reply are not queued (#25, 1)."""
    results: list[str] = []
    done = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        await ws.close(1000, "bye")
        try:
            results.append(repr(await ws.recv()))
        except trionos.ConnectionClosed as exc:
            results.append(f"closed {exc.code}")
        done.set()

    server = await start_server(handler)
    stream = await raw_websocket_peer(server.port)
    async with stream:
        await _read_until_close_frame(stream)
        flood = encode_frame(OP_BINARY, b"x" * 65536, masked=True)
        for _ in range(20):
            await stream.send_all(flood)
        await stream.send_all(encode_frame(OP_CLOSE, close_payload(1000), masked=True))
        await read_all(stream)
    with trio.fail_after(5):
        await done.wait()
    assert results == ["closed 1000"]
    assert server.metrics.messages_in == 0


async def test_data_after_the_client_sent_its_close_is_discarded(nursery: trio.Nursery) -> None:
    """A server that answers the client's close with data frames cannot fill the client (#25, 1)."""

    async def peer(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key).encode()
        )
        await _read_until_close_frame(stream)
        for _ in range(20):
            await stream.send_all(encode_frame(OP_BINARY, b"y" * 65536))
        await stream.send_all(encode_frame(OP_CLOSE, close_payload(1000)))
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, peer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with trionos.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.close()
        with pytest.raises(trionos.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.code == 1000


def bomb(size: int) -> bytes:
    """A masked, compressed (RSV1) binary frame whose payload inflates to *size* zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    body = compressor.compress(b"\0" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = bytearray(encode_frame(OP_BINARY, body[:-4], masked=True))  # without 00 00 ff ff
    frame[0] |= 0x40
    return bytes(frame)


async def deflate_peer(port: int) -> trio.SocketStream:
    """A raw client that negotiated permessage-deflate (no context takeover, as the server asks)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(UPGRADE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head
    return stream


async def test_one_read_of_small_bombs_inflates_no_more_than_the_read_ahead(start_server: ServeFn) -> None:
    """A 64 KiB read of ~1 KiB frames that each inflate to ~1 MiB is not inflated whole (#25, 4)."""
    sent = trio.Event()
    inflated: list[int] = []
    metrics = trionos.Metrics()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        await sent.wait()
        assert len(await ws.recv()) == 1024 * 1024 - 64
        inflated.append(metrics.bytes_in)
        await ws.close()

    server = await start_server(handler, compression="deflate", metrics=metrics)
    one = bomb(1024 * 1024 - 64)
    stream = await deflate_peer(server.port)
    async with stream:
        await stream.send_all(one * (65536 // len(one)))
        sent.set()
        with trio.fail_after(10):
            await _read_until_close_frame(stream)
            await stream.send_all(encode_frame(OP_CLOSE, close_payload(1000), masked=True))
            await read_all(stream)
    # Before: the whole read (63 frames, ~63 MiB) was inflated and queued behind the first one.
    assert inflated and inflated[0] <= 2 * 1024 * 1024


async def test_inflation_over_the_budget_pauses_reading(start_server: ServeFn) -> None:
    """A connection that inflates faster than max_inflate_rate waits, and is counted (#25, 4)."""
    received: list[int] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        for _ in range(6):
            received.append(len(await ws.recv()))

    server = await start_server(handler, compression="deflate", max_inflate_rate=1024 * 1024)
    stream = await deflate_peer(server.port)
    async with stream:
        await stream.send_all(bomb(512 * 1024) * 6)  # 3 MiB inflated, the burst is 2 MiB
        with trio.fail_after(10):
            await _read_until_close_frame(stream)
            await stream.send_all(encode_frame(OP_CLOSE, close_payload(1000), masked=True))
            await read_all(stream)
    assert received == [512 * 1024] * 6
    assert server.metrics.inflation_waits >= 1


def test_the_inflation_budget_is_a_token_bucket_of_added_bytes() -> None:
    """Bytes inflation added are charged; a debt is paid back at the rate; nothing added costs nothing."""
    budget = InflationBudget(1000, now=0.0)
    budget.spend(-500, now=0.0)  # uncompressed traffic: the messages are smaller than the wire bytes
    assert budget.delay(0.0) == 0 and not budget.exhausted()
    budget.spend(2500, now=0.0)
    assert budget.exhausted()
    assert budget.delay(0.0) == pytest.approx(0.5)
    assert budget.delay(0.5) == 0 and not budget.exhausted()
    assert budget.delay(100.0) == 0
    budget.spend(2000, now=100.0)  # refilled to the burst (2000), not beyond
    assert not budget.exhausted()


async def _frames_until_close(stream: trio.abc.Stream) -> list[tuple[int, bytes]]:
    """Every frame the server sends until its close frame, as (opcode, payload); the close last."""
    frames: list[tuple[int, bytes]] = []
    data = b""
    with trio.fail_after(10):
        while True:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before a close frame, after {frames!r}"
            data += chunk
            while (size := frame_size(data, 0)) > 0 and len(data) >= size:
                head = 4 if data[1] & 0x7F == 126 else 2
                frames.append((data[0] & 0x0F, data[head:size]))
                data = data[size:]
                if frames[-1][0] == OP_CLOSE:
                    return frames


@pytest.mark.parametrize("text", [False, True], ids=["protocol-pings", "text-pings"])
async def test_a_ping_flood_is_closed_with_1008(start_server: ServeFn, text: bool) -> None:
    """Pings count against a budget: a burst is answered, a flood is closed like a chat flood (#25, 11)."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept(answer_text_ping=True)
        async for _ in ws:
            pass

    server = await start_server(handler)
    stream = await raw_websocket_peer(server.port)
    ping = encode_frame(OP_TEXT, b"ping", masked=True) if text else encode_frame(OP_PING, b"", masked=True)
    async with stream:
        await stream.send_all(ping * (PING_LIMIT.burst + PING_LIMIT.close_after + 10))
        frames = await _frames_until_close(stream)
    pongs = [opcode for opcode, _ in frames if opcode in (OP_PONG, OP_TEXT)]
    # The burst is answered (a protocol ping's pong comes from the core even over the budget).
    assert len(pongs) >= PING_LIMIT.burst
    assert frames[-1] == (OP_CLOSE, close_payload(1008, "too many pings"))
    assert server.metrics.rate_limited == PING_LIMIT.close_after


async def test_pings_within_the_budget_are_answered(start_server: ServeFn) -> None:
    """A burst of pings within the budget gets every pong and keeps the connection (#25, 11)."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept(answer_text_ping=True)
        await ws.send(await ws.recv())

    server = await start_server(handler)
    stream = await raw_websocket_peer(server.port)
    async with stream:
        burst = encode_frame(OP_PING, b"", masked=True) + encode_frame(OP_TEXT, b"ping", masked=True)
        await stream.send_all(burst * (PING_LIMIT.burst // 2) + encode_frame(OP_TEXT, b"hi", masked=True))
        frames = await _frames_until_close(stream)
    assert [payload for opcode, payload in frames if opcode == OP_TEXT] == [b"pong"] * 10 + [b"hi"]
    assert len([opcode for opcode, _ in frames if opcode == OP_PONG]) == 10
    assert frames[-1] == (OP_CLOSE, close_payload(1000))
    assert server.metrics.rate_limited == 0


async def test_the_ping_budget_is_a_server_setting(start_server: ServeFn) -> None:
    """max_ping_rate and max_ping_burst replace the default budget: 3 pings answered, 3 more refused close."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept(answer_text_ping=True)
        async for _ in ws:
            pass

    server = await start_server(handler, max_ping_rate=0.01, max_ping_burst=3)
    assert server.ping_limit == trionos.RateLimit(rate=0.01, burst=3, close_after=3)
    stream = await raw_websocket_peer(server.port)
    async with stream:
        await stream.send_all(encode_frame(OP_TEXT, b"ping", masked=True) * 10)
        frames = await _frames_until_close(stream)
    assert [payload for opcode, payload in frames if opcode == OP_TEXT] == [b"pong"] * 3
    assert frames[-1] == (OP_CLOSE, close_payload(1008, "too many pings"))
    assert server.metrics.rate_limited == 3
    with pytest.raises(ValueError, match="max_ping_rate must be a positive, finite number per second"):
        trionos.ServerOptions(max_ping_rate=0)
    with pytest.raises(TypeError, match="max_ping_burst must be a whole number"):
        trionos.ServerOptions(max_ping_burst=2.5)  # type: ignore[arg-type]  # untyped callers


async def test_silent_connections_cannot_keep_a_real_client_out(start_server: ServeFn) -> None:
    """At capacity, the oldest connection without a head is evicted for a newcomer (#25, 12)."""
    server = await start_server(echo_handler, max_connections=5)
    silent = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(5)]
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert server.metrics.handshakes_open == 5
    async with trionos.connect(server.url) as ws:
        await ws.send("through")
        assert await ws.recv() == "Echo: through"
    assert await read_all(silent[0]) == b""  # the oldest was let go, without a word
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert server.metrics.handshakes_evicted == 1
    assert server.metrics.silent_connections == 1
    assert server.metrics.handshakes_open == 4
    assert server.metrics.connections_refused == {}
    for stream in silent:
        await stream.aclose()


async def test_a_connection_that_never_sends_a_byte_is_counted(start_server: ServeFn) -> None:
    """A connection that times out without a byte is counted as silent, not as a refusal (#25, 12)."""
    server = await start_server(echo_handler, handshake_timeout=0.2)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        with trio.fail_after(5):
            assert await read_all(stream) == b""
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert server.metrics.silent_connections == 1
    assert server.metrics.handshakes_open == 0
    assert server.metrics.connections_refused == {}
