"""What operators see: quiet logs for network events, the per-address limit, and the counters."""

from __future__ import annotations

import logging
import socket as stdlib_socket
import struct

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import ServeFn, echo_handler, http_get, raw_websocket_peer, read_all
from trionos._frames import OP_TEXT, encode_frame


async def wait_until_idle(server: trionos.Server) -> None:
    """Wait until the server has finished every connection."""
    with trio.fail_after(10):
        while server.active_streams:
            await trio.testing.wait_all_tasks_blocked()


async def test_network_events_log_one_quiet_line(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    """A reset, a drop without close frame and a protocol error log one line each below WARNING."""
    caplog.set_level(logging.DEBUG, logger="trionos")
    server = await start_server(echo_handler)  # lets ConnectionClosed escape the handler
    # A reset (RST) while the handler waits in recv.
    stream = await raw_websocket_peer(server.port)
    await stream.send_all(encode_frame(OP_TEXT, b"hi", masked=True))
    await stream.receive_some(100)
    stream.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    # A drop without a close frame.
    stream = await raw_websocket_peer(server.port)
    await stream.aclose()
    # A protocol error (an unmasked frame).
    stream = await raw_websocket_peer(server.port)
    async with stream:
        await stream.send_all(encode_frame(OP_TEXT, b"unmasked"))
        await read_all(stream)
    await wait_until_idle(server)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if r.exc_info] == []
    ended = [r.getMessage() for r in caplog.records if "ended" in r.getMessage()]
    assert len(ended) == 3
    assert all("\n" not in line for line in ended)


async def test_handler_bugs_still_log_an_error_with_traceback(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception of the handler's own is our bug: ERROR, with its traceback."""

    async def buggy(req: trionos.Request) -> None:
        await req.accept()
        raise ZeroDivisionError("oops")

    server = await start_server(buggy)
    async with trionos.connect(server.url) as ws:
        with pytest.raises(trionos.ConnectionClosed):
            await ws.recv()
    await wait_until_idle(server)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


async def test_per_address_limit_answers_503_and_counts(start_server: ServeFn) -> None:
    """Connections from one address beyond max_connections_per_address get 503, counted by reason."""
    metrics = trionos.Metrics()
    server = await start_server(echo_handler, max_connections_per_address=2, metrics=metrics)
    async with trionos.connect(server.url) as first, trionos.connect(server.url) as second:
        with pytest.raises(trionos.ConnectionRejected) as info:
            async with trionos.connect(server.url):
                pass
        assert info.value.status_code == 503
        assert metrics.connections_refused == {trionos.RefusalReason.PER_ADDRESS: 1}
        await first.send("still")
        assert await first.recv() == "Echo: still"
        assert not second.closed
    await wait_until_idle(server)
    async with trionos.connect(server.url) as again:  # the slots are free again
        await again.send("back")
        assert await again.recv() == "Echo: back"


async def test_server_counters(start_server: ServeFn) -> None:
    """Accepted, open, refused, closed-by-code, messages and bytes both ways are counted."""
    metrics = trionos.Metrics()
    server = await start_server(echo_handler, metrics=metrics, origins=[None])
    async with trionos.connect(server.url) as ws:
        await ws.send("abc")
        assert await ws.recv() == "Echo: abc"
        assert (metrics.websockets_open, metrics.connections_open) == (1, 1)
    upgrade = (
        b"Origin: http://evil\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    assert (await http_get(server.port, extra=upgrade)).startswith(b"HTTP/1.1 403")
    await wait_until_idle(server)
    assert metrics.connections_accepted == 2
    assert (metrics.websockets_open, metrics.connections_open) == (0, 0)
    assert metrics.connections_refused == {trionos.RefusalReason.ORIGIN: 1}
    assert metrics.websockets_closed == {1000: 1}
    assert (metrics.messages_in, metrics.bytes_in) == (1, 3)
    assert (metrics.messages_out, metrics.bytes_out) == (1, len(encode_frame(OP_TEXT, b"Echo: abc")))


async def test_heartbeat_timeouts_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    """A peer cut by the heartbeat counts once in heartbeat_timeouts."""
    from trionos.testing import half_open_peer, open_memory_server

    metrics = trionos.Metrics()
    ended = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            async for _ in ws:
                pass
        finally:
            ended.set()

    async with open_memory_server(handler, heartbeat=trionos.Heartbeat(), metrics=metrics) as server:
        async with half_open_peer(server):
            await ended.wait()
            await trio.testing.wait_all_tasks_blocked()
    assert metrics.heartbeat_timeouts == 1
