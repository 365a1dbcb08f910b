"""Replays that do not fit a client's outbox: written as it reads, never holding its room back.

The pure part (:class:`trionos._replay.Backlog`) is tested against a fake transport; the hub's part
against a memory server, in virtual time: a client that never reads its multi-MiB replay is held
to its outbox bound, the hub's backlog counters stay within the replay and ``room_queue_bytes``,
the other members keep receiving, and the slow-client policy ends it as it ends any slow client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import ServeFn
from trionos._replay import REPLAY_PIECE_BYTES, Backlog
from trionos.testing import MemoryServer, open_memory_server

#: A replay bigger than the outbox (1 MiB), the feed (4 MiB) and the pipe put together.
CHUNK = 64 << 10
CHUNKS = 128
OUTBOX = 1 << 20


class FakeTransport:
    """Takes writes while it has room (counted in bytes), like a transport with a full socket."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.dropped = 0

    def write_nowait(self, frame: bytes) -> bool:
        if len(frame) > self.room:
            return False
        self.room -= len(frame)
        self.written.append(frame)
        return True

    def write_dropping_oldest(self, frame: bytes) -> int:
        self.written.append(frame)
        self.dropped += 1
        return 1


def test_a_backlog_writes_pieces_in_order_as_far_as_the_transport_takes_them() -> None:
    """Frames are joined into pieces of at most REPLAY_PIECE_BYTES; the rest waits, counted in bytes."""
    metrics = trionos.Metrics()
    backlog = Backlog(metrics)
    frames = [bytes([n]) * (REPLAY_PIECE_BYTES // 4) for n in range(10)]
    backlog.replay(frames)
    backlog.queue(b"live")
    assert metrics.backlog_bytes_open == backlog.size == sum(map(len, frames)) + 4
    assert backlog.behind == 4
    transport = FakeTransport(room=2 * REPLAY_PIECE_BYTES)
    assert not backlog.pump(transport)  # type: ignore[arg-type]  # a fake with the two writes used
    assert transport.written == [b"".join(frames[:4]), b"".join(frames[4:8])]
    transport.room = 10 * REPLAY_PIECE_BYTES
    assert backlog.pump(transport)  # type: ignore[arg-type]
    assert b"".join(transport.written) == b"".join(frames) + b"live"
    assert not backlog and metrics.backlog_bytes_open == 0 and backlog.behind == 0


def test_a_backlog_under_drop_oldest_writes_everything_at_once() -> None:
    """pump_dropping_oldest never refuses: every piece goes, and what the transport dropped is counted."""
    metrics = trionos.Metrics()
    backlog = Backlog(metrics)
    backlog.replay([b"x" * REPLAY_PIECE_BYTES] * 3)
    transport = FakeTransport(room=0)
    assert backlog.pump_dropping_oldest(transport) == 3  # type: ignore[arg-type]
    assert len(transport.written) == 3 and metrics.backlog_bytes_open == 0


def test_clearing_a_backlog_gives_its_bytes_back() -> None:
    """clear() forgets the frames and takes them off backlog_bytes_open."""
    metrics = trionos.Metrics()
    backlog = Backlog(metrics)
    backlog.replay([b"a" * 100])
    backlog.queue(b"b" * 50)
    backlog.clear()
    assert not backlog and metrics.backlog_bytes_open == 0 and backlog.size == backlog.behind == 0


class Room:
    """A hub with CHUNKS x CHUNK bytes of history in room "r", and a memory server for it."""

    def __init__(self, hub: trionos.Hub) -> None:
        self.hub = hub
        self.clients: dict[str, trionos.Client] = {}
        self.closed: dict[str, trio.Event] = {}
        self.codes: dict[str, int | None] = {}
        self.registered = trio.Event()

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        name = req.path.strip("/")
        self.closed[name] = trio.Event()
        async with self.hub.client(ws, client_id=name) as client:
            if name.startswith("slow"):  # rejoins from the start: the whole history is replayed
                await self.hub.join_with_history(client, "r", since=trionos.Position("gone", 0))
            else:
                self.hub.join(client, "r")
            self.clients[name] = client  # (once joined)
            self.registered.set()
            self.registered = trio.Event()
            try:
                async for _ in ws:
                    pass
            except trionos.ConnectionClosed:
                pass
            finally:
                self.codes[name] = ws.close_code
                self.closed[name].set()

    async def wait_for(self, name: str) -> trionos.Client:
        while name not in self.clients:
            await self.registered.wait()
        return self.clients[name]


async def fill(hub: trionos.Hub) -> None:
    for n in range(CHUNKS):
        await hub.broadcast("r", json.dumps({"n": n, "pad": "x" * (CHUNK - 32)}))


async def read_live(ws: trionos.WebSocket, count: int) -> list[Any]:
    return [json.loads(await ws.recv()) for _ in range(count)]


#: Room for the whole replay in the history.
BOUNDS = trionos.HistoryBounds(max_messages=1000, max_bytes=16 << 20)


@asynccontextmanager
async def filled_room(**hub_options: Any) -> AsyncIterator[tuple[trionos.Hub, Room, MemoryServer]]:
    """A hub (with *hub_options*) whose room "r" holds CHUNKS x CHUNK bytes, served from memory."""
    async with trionos.Hub(history=BOUNDS, **hub_options) as hub:
        await fill(hub)
        room = Room(hub)
        async with open_memory_server(room.handler, heartbeat=None, max_outbox_bytes=OUTBOX) as server:
            yield hub, room, server


@pytest.mark.parametrize("policy", ["disconnect", "drop_oldest"])
async def test_a_client_that_never_reads_its_replay_costs_a_bounded_backlog_and_holds_nobody_back(
    autojump_clock: trio.testing.MockClock, policy: str
) -> None:
    """8 MiB of replay to a client that never reads: outbox and backlog stay bounded, others go on."""
    history_bytes = CHUNKS * CHUNK
    async with filled_room(policy=policy) as (hub, room, server):
        async with server.connect("/fast") as fast, server.connect("/slow"):
            await room.wait_for("fast")
            slow = await room.wait_for("slow")
            started = trio.current_time()
            # The slow client never reads. The node holds at most its outbox and its backlog:
            assert slow.ws.transport.peak_outbox_bytes <= OUTBOX + REPLAY_PIECE_BYTES
            if policy == "disconnect":
                assert 0 < hub.metrics.backlog_bytes_open <= history_bytes
            else:  # drop_oldest never waits: nothing is kept beside the outbox
                assert hub.metrics.backlog_bytes_open == 0
                assert hub.metrics.frames_dropped > 0
            # ...while the room goes on at once for everyone else.
            for n in range(20):
                await hub.broadcast("r", json.dumps({"live": n}))
            assert [m["live"] for m in await read_live(fast, 20)] == list(range(20))
            assert trio.current_time() - started < hub.grace / 2
            assert hub.metrics.backlog_bytes_open <= history_bytes + hub.room_queue_bytes
            assert slow.ws.transport.peak_outbox_bytes <= OUTBOX + REPLAY_PIECE_BYTES
            if policy == "disconnect":
                with trio.fail_after(2 * hub.grace):
                    await room.closed["slow"].wait()
                assert room.codes["slow"] == 1008
                assert trio.current_time() - started <= hub.grace + 0.5
                assert hub.metrics.slow_client_disconnects == 1
                assert hub.metrics.backlog_bytes_open == 0
            else:
                await trio.sleep(3 * hub.grace)
                assert not room.closed["slow"].is_set()
                assert hub.metrics.slow_client_disconnects == 0
    assert hub.metrics.backlog_bytes_open == 0


async def test_a_replay_that_fits_as_the_client_reads_arrives_whole_then_live_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A reading client gets all 8 MiB of its replay, then what was broadcast meanwhile, nothing twice."""
    async with filled_room() as (hub, room, server):
        async with server.connect("/slow-reader", max_message_size=1 << 20) as ws:
            await room.wait_for("slow-reader")
            assert hub.metrics.backlog_bytes_open > 0  # it did not all fit at once
            for n in range(5):
                await hub.broadcast("r", json.dumps({"live": n}))
            got = await read_live(ws, CHUNKS + 5)
            assert [m["n"] for m in got[:CHUNKS]] == list(range(CHUNKS))
            assert [m["live"] for m in got[CHUNKS:]] == list(range(5))
            await hub.broadcast("r", json.dumps({"live": 5}))
            assert (await read_live(ws, 1))[0]["live"] == 5
            assert hub.metrics.backlog_bytes_open == 0
            assert hub.metrics.slow_client_disconnects == 0


async def test_a_client_that_falls_room_queue_bytes_behind_its_replay_is_closed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What queues behind a replay is bounded by room_queue_bytes: beyond it, 1008 without the grace wait."""
    async with filled_room(room_queue_bytes=256 << 10) as (hub, room, server):
        async with server.connect("/slow"):
            await room.wait_for("slow")
            started = trio.current_time()
            for n in range(8):
                await hub.broadcast("r", json.dumps({"live": n, "pad": "y" * (CHUNK - 32)}))
            with trio.fail_after(hub.grace):
                await room.closed["slow"].wait()
            assert room.codes["slow"] == 1008
            assert trio.current_time() - started < hub.grace / 2
            assert hub.metrics.backlog_bytes_open == 0


async def test_hub_settings_for_feeds_and_sweeps_are_validated() -> None:
    """room_queue_bytes and history_sweep_interval are checked like the hub's other settings."""
    hub = trionos.Hub(room_queue_bytes=1 << 20, history_sweep_interval=5)
    assert hub.room_queue_bytes == 1 << 20 and hub.history_sweep_interval == 5.0
    assert trionos.Hub().room_queue_bytes == 4 << 20 and trionos.Hub().history_sweep_interval == 30.0
    with pytest.raises(ValueError, match="room_queue_bytes must be at least 1"):
        trionos.Hub(room_queue_bytes=0)
    with pytest.raises(TypeError, match="room_queue_bytes must be a whole number"):
        trionos.Hub(room_queue_bytes=1.5)  # type: ignore[arg-type]  # untyped callers
    with pytest.raises(ValueError, match="history_sweep_interval must be a positive, finite"):
        trionos.Hub(history_sweep_interval=0)
    with pytest.raises(TypeError, match="history_sweep_interval must be a number of seconds"):
        trionos.Hub(history_sweep_interval="30")  # type: ignore[arg-type]
    await trio.lowlevel.checkpoint()


async def test_on_redis_a_client_that_never_reads_its_replay_is_bounded_and_closed(
    redis: str, prefix: str
) -> None:
    """The same with the history in Redis: bounded outbox and backlog, others served, 1008, nothing left."""
    broker = trionos.RedisBroker(redis, prefix=prefix)
    async with filled_room(broker=broker, grace=0.5) as (hub, room, server):
        async with server.connect("/fast") as fast, server.connect("/slow"):
            await room.wait_for("fast")
            slow = await room.wait_for("slow")
            assert 0 < hub.metrics.backlog_bytes_open <= CHUNKS * CHUNK
            for n in range(20):
                await hub.broadcast("r", json.dumps({"live": n}))
            assert [m["live"] for m in await read_live(fast, 20)] == list(range(20))
            with trio.fail_after(10 * hub.grace):
                await room.closed["slow"].wait()
            assert room.codes["slow"] == 1008
            assert slow.ws.transport.peak_outbox_bytes <= OUTBOX + REPLAY_PIECE_BYTES
            assert hub.metrics.backlog_bytes_open == 0


async def test_replayed_frames_count_as_messages_and_bytes_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each replayed frame counts once in messages_out and bytes_out, whether written at once or later."""
    async with (
        filled_room() as (hub, room, server),
        server.connect("/slow-reader", max_message_size=1 << 20) as ws,
    ):
        await room.wait_for("slow-reader")
        before = (hub.metrics.messages_out, hub.metrics.bytes_out)
        await read_live(ws, CHUNKS)
        assert hub.metrics.backlog_bytes_open == 0
        assert (hub.metrics.messages_out, hub.metrics.bytes_out) == before
        assert hub.metrics.messages_out == CHUNKS and hub.metrics.bytes_out > CHUNKS * (CHUNK - 64)


async def test_a_second_replay_goes_behind_the_first_and_a_direct_send_does_not_lose_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two joins in a row queue their replays in order; a send meanwhile loses nothing of them."""
    async with filled_room() as (hub, room, server):
        for n in range(3):
            await hub.broadcast("other", json.dumps({"other": n}))
        async with server.connect("/slow-reader", max_message_size=1 << 20) as ws:
            client = await room.wait_for("slow-reader")
            assert hub.metrics.backlog_bytes_open > 0
            await hub.join_with_history(client, "other", last=3)
            async with trio.open_nursery() as nursery:  # the send waits for the socket: read meanwhile
                nursery.start_soon(client.ws.send, json.dumps({"direct": True}))
                got = await read_live(ws, CHUNKS + 4)
            direct = [m for m in got if "direct" in m]
            rest = [m for m in got if "direct" not in m]
            assert len(direct) == 1
            assert [m["n"] for m in rest[:CHUNKS]] == list(range(CHUNKS))
            assert [m["other"] for m in rest[CHUNKS:]] == [0, 1, 2]
            assert hub.metrics.backlog_bytes_open == 0


async def test_over_real_sockets_a_never_reading_rejoin_is_closed_and_the_room_goes_on(
    start_server: ServeFn,
) -> None:
    """End to end on 127.0.0.1: 24 MiB replayed to a client that stops reading, beside a reading member."""
    bounds = trionos.HistoryBounds(max_messages=1000, max_bytes=32 << 20)
    async with trionos.Hub(history=bounds, grace=0.5) as hub:
        for n in range(3 * CHUNKS):  # more than the kernel's socket buffers take on loopback
            await hub.broadcast("r", json.dumps({"n": n, "pad": "x" * (CHUNK - 32)}))
        room = Room(hub)
        server = await start_server(room.handler, max_outbox_bytes=OUTBOX)
        url = f"ws://127.0.0.1:{server.port}"
        async with (
            trionos.connect(url + "/fast", heartbeat=None) as fast,
            trionos.connect(url + "/slow", heartbeat=None, max_message_size=1 << 20),
        ):
            await room.wait_for("fast")
            slow = await room.wait_for("slow")
            assert hub.metrics.backlog_bytes_open > 0  # the sockets and the outbox did not take it all
            for n in range(20):
                await hub.broadcast("r", json.dumps({"live": n}))
            assert [m["live"] for m in await read_live(fast, 20)] == list(range(20))
            with trio.fail_after(20 * hub.grace):
                await room.closed["slow"].wait()
            assert room.codes["slow"] == 1008
            assert slow.ws.transport.peak_outbox_bytes <= OUTBOX + REPLAY_PIECE_BYTES
            assert hub.metrics.backlog_bytes_open == 0
