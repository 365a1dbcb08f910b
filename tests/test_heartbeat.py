"""Heartbeats and dead-peer detection, on virtual time (``autojump_clock``) and over loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

import trionos
from tests.helpers import ServeFn
from trionos._client import ClientOptions, connect_over
from trionos._heartbeat import SERVICE_TICK
from trionos.chat import SERVER_CODEC
from trionos.testing import (
    expect_message,
    half_open_peer,
    memory_pipe,
    open_memory_server,
    open_raw_peer,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from room_chat import make_handler

HEARTBEAT = trionos.Heartbeat()  # the real defaults: ping every 30 s, dead after 60 s


class Recorder:
    """A handler that accepts, reads until the connection ends, and notes when it ended."""

    def __init__(self, *, busy_for: float = 0.0) -> None:
        self.busy_for = busy_for
        self.received: list[str | bytes] = []
        self.ended_at: float | None = None
        self.ended = trio.Event()

    async def __call__(self, req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            await trio.sleep(self.busy_for)  # a handler busy elsewhere, not reading
            async for message in ws:
                self.received.append(message)
        finally:
            self.ended_at = trio.current_time()
            self.ended.set()


def test_heartbeat_settings_are_validated() -> None:
    """Intervals and timeouts must be positive."""
    with pytest.raises(ValueError, match="Heartbeat timeout must be a positive, finite number of seconds"):
        trionos.Heartbeat(timeout=0)
    assert trionos.Heartbeat() == trionos.Heartbeat(interval=30.0, timeout=60.0)


async def test_silent_peer_is_closed_after_the_timeout_and_not_before(autojump_clock: trio.abc.Clock) -> None:
    """A half-open peer is cut 60 s after its last byte, not at 59 s, and its stream ends."""
    recorder = Recorder()
    async with open_memory_server(recorder, heartbeat=HEARTBEAT) as server:
        async with half_open_peer(server) as peer:
            start = trio.current_time()
            await trio.sleep(59)
            assert recorder.ended_at is None
            await recorder.ended.wait()
            assert recorder.ended_at is not None
            assert 60 <= recorder.ended_at - start <= 61
            with trio.fail_after(1):  # the transport is closed at once, without a handshake
                while await peer.stream.receive_some(65536):
                    pass
    assert not server.server.connections


async def test_peer_that_only_answers_pings_is_kept(autojump_clock: trio.abc.Clock) -> None:
    """A peer that sends nothing but pongs stays connected for ten timeouts."""
    recorder = Recorder()
    async with open_memory_server(recorder, heartbeat=HEARTBEAT) as server:
        async with server.connect("/") as ws:
            await trio.sleep(10 * 60)
            assert recorder.ended_at is None
            await ws.send("still here")
            await trio.testing.wait_all_tasks_blocked()
            assert recorder.received == ["still here"]


async def test_busy_handler_does_not_kill_a_live_peer(autojump_clock: trio.abc.Clock) -> None:
    """A handler that does not read for 5 minutes keeps a peer that answers pings, then reads all."""
    recorder = Recorder(busy_for=300)
    async with open_memory_server(recorder, heartbeat=HEARTBEAT) as server:
        async with server.connect("/") as ws:
            for i in range(5):  # more than the server queues: its reader stops reading
                await ws.send(f"m{i}")
            await trio.sleep(300)
            await trio.testing.wait_all_tasks_blocked()
            assert recorder.ended_at is None
            assert recorder.received == [f"m{i}" for i in range(5)]


async def test_timed_out_room_member_is_announced_as_left(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """When a room chat member goes silent, the others see it leave after the timeout."""
    hub = await nursery.start(trionos.Hub(codec=SERVER_CODEC).run)
    async with open_memory_server(make_handler(hub), heartbeat=HEARTBEAT) as server:
        async with server.connect("/", message_queue_size=16) as ann:
            await ann.send_json({"type": "join", "username": "ann"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
            async with half_open_peer(server) as bob:
                await bob.send('{"type":"join","username":"bob"}')
                await expect_message(ann, {"type": "joined", "username": "bob"})
                start = trio.current_time()
                await expect_message(ann, {"type": "left", "username": "bob"}, timeout=62)
                assert trio.current_time() - start >= 60
            assert [c.name for c in hub.members("lobby")] == ["ann"]


async def test_client_detects_a_dead_server(autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    """A server that accepts and then goes silent is declared dead by the client's heartbeat."""
    client_end, server_end = memory_pipe()

    async def silent_server() -> None:
        conn = WSConnection(ConnectionType.SERVER)
        while True:
            conn.receive_data(await server_end.receive_some())
            if any(isinstance(event, Request) for event in conn.events()):
                break
        await server_end.send_all(conn.send(AcceptConnection()))
        await trio.sleep_forever()  # never reads, never answers a ping

    nursery.start_soon(silent_server)

    async def open_stream() -> trio.abc.Stream:
        return client_end

    options = ClientOptions(heartbeat=HEARTBEAT)
    start = trio.current_time()
    with pytest.raises(trionos.ConnectionClosed) as info:
        async with connect_over(open_stream, "test", "/", options, remote=None) as ws:
            await ws.recv()
    assert info.value.code == 1011 and "heartbeat timeout" in info.value.reason
    assert 60 <= trio.current_time() - start <= 61


async def test_half_open_peer_over_loopback(nursery: trio.Nursery) -> None:
    """Over real TCP, a peer that handshakes and goes silent has its connection closed by the server."""
    recorder = Recorder()
    heartbeat = trionos.Heartbeat(interval=0.05, timeout=0.2)
    server = await nursery.start(
        lambda task_status: trionos.serve(
            0, recorder, host="127.0.0.1", heartbeat=heartbeat, task_status=task_status
        )
    )
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with trio.fail_after(10):  # a generous bound for a loaded machine; the timeout is 0.2 s
        await recorder.ended.wait()
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 101")
    assert b"\x88" in received  # the 1011 close frame fits in an idle socket buffer
    assert not server.connections


async def test_raw_peer_answering_pings_survives(autojump_clock: trio.abc.Clock) -> None:
    """A raw peer that keeps reading (and so answers pings) is never timed out."""
    recorder = Recorder()
    async with open_memory_server(recorder, heartbeat=HEARTBEAT) as server:
        async with open_raw_peer(server, answer_pings=True) as peer:
            with trio.move_on_after(5 * 60):
                await peer.recv()  # only pings arrive; reading them answers them
            assert recorder.ended_at is None
            assert peer.pings_received >= 9


async def test_text_ping_is_answered_and_keepalive_sends_it(autojump_clock: trio.abc.Clock) -> None:
    """With answer_text_ping, text "ping" gets "pong" and never reaches recv(); send_keepalive pings."""
    received: list[str | bytes] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept(answer_text_ping=True)
        async for message in ws:
            received.append(message)

    async with open_memory_server(handler, heartbeat=None) as server:
        async with server.connect("/", message_queue_size=16) as ws, trio.open_nursery() as nursery:
            nursery.start_soon(trionos.send_keepalive, ws, 25.0)
            await trio.sleep(3 * 25 + 1)
            assert [await ws.recv() for _ in range(3)] == ["pong"] * 3
            await ws.send("hello")
            await trio.testing.wait_all_tasks_blocked()
            assert received == ["hello"]
            nursery.cancel_scope.cancel()


async def test_peer_that_stops_reading_with_replies_queued_is_timed_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A peer that stops reading and sending while the handler is stuck sending to it is cut at ~60 s."""
    ended = trio.Event()
    ended_at: list[float] = []

    async def pusher(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            async for message in ws:
                while True:  # far more than the peer will ever read: the send blocks
                    await ws.send(message * 1000)
        finally:
            ended_at.append(trio.current_time())
            ended.set()

    async with open_memory_server(pusher, heartbeat=HEARTBEAT) as server:
        async with half_open_peer(server) as peer:
            for _ in range(5):  # more than the handler takes while it is stuck sending
                await peer.send("x")
            start = trio.current_time()
            with trio.fail_after(120):
                await ended.wait()
            # Its last bytes are read within two keeper ticks (the handler is not receiving).
            assert 60 <= ended_at[0] - start <= 60 + 2 * SERVICE_TICK + 1
            with trio.fail_after(1):  # dead: its stream ends at once, no closing handshake
                while await peer.stream.receive_some(65536):
                    pass
    assert not server.server.connections


async def test_busy_handler_with_a_pong_answering_peer_is_not_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Messages that arrive with the handshake and keep the handler busy do not expire the peer."""
    recorder = Recorder()
    got_first = trio.Event()

    async def busy(req: trionos.Request) -> None:
        ws = await req.accept()
        recorder.received.append(await ws.recv())
        got_first.set()
        await trio.sleep(5 * 60)  # busy with the first message, far beyond the timeout
        async for message in ws:
            recorder.received.append(message)

    async with open_memory_server(busy, heartbeat=HEARTBEAT) as server:
        async with server.connect("/", heartbeat=HEARTBEAT) as ws:
            for i in range(3):  # all in one go, right behind the handshake
                await ws.send(f"m{i}")
            await got_first.wait()
            await trio.sleep(5 * 60 + 1)
            await ws.send("after")
            await trio.testing.wait_all_tasks_blocked()
            assert not ws.closed
    assert recorder.received == ["m0", "m1", "m2", "after"]


async def test_push_only_handler_notices_the_peer_close_and_answers_pings(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A handler that never calls recv still answers pings, and its sends fail once the peer closed."""
    closes: list[int] = []
    ended = trio.Event()

    async def push_only(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            while True:
                await ws.send("tick")
                await trio.sleep(10)
        except trionos.ConnectionClosed as exc:
            closes.append(exc.code)
            ended.set()

    async with open_memory_server(push_only, heartbeat=None) as server:
        async with open_raw_peer(server, answer_pings=False) as peer:
            await peer.ping(b"are you there")
            assert await peer.recv() == "tick"
            with trio.fail_after(11):  # the next tick; the servicer answers the ping before it
                await peer.recv()
            assert peer.pongs_received == 1
            await peer.close(1000)
        with trio.fail_after(15):
            await ended.wait()
    assert closes == [1000]


async def test_recv_called_before_a_just_started_servicer_runs_gets_the_message(
    start_server: ServeFn,
) -> None:
    """A recv that comes between the keeper starting a servicer and its first step is not starved."""

    async def reply_to_go(req: trionos.Request) -> None:
        ws = await req.accept()
        assert await ws.recv() == "go"
        await ws.send("late")
        await ws.recv()  # until the client closes

    server = await start_server(reply_to_go)
    async with trionos.connect(server.url, message_queue_size=64) as ws:
        await ws.send("go")
        # The keeper's tick, as under load: the servicer is started, but has not run when the
        # application calls recv, which then waits for it. It must step aside at once; reading on
        # instead, it took "late" into the inbox and kept the receiver waiting for ever.
        ws._keep()
        ws._keep()
        with trio.fail_after(10):  # a guard: without the fix this never returns
            assert await ws.recv() == "late"
