"""The `disconnect` policy on virtual time: the room waits for one slow member ``grace`` seconds in
total, however slowly it keeps reading, and then goes on at full speed without it.

Connections are in-memory pipes (64 KiB each way, like a loopback socket) and the clock is
``autojump_clock``, so "reads 64 KiB every 0.5 s" is exact and the figures are deterministic.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import trionos
from trionos.testing import open_memory_server, slow_consumer

GRACE = 2.0
READ_EVERY = 0.5
READ_SIZE = 64 * 1024
MESSAGE = b"m" * (4 * 1024 - 4)
OUTBOX = 64 * 1024
FAST_READERS = 3


class Room:
    """A handler: every connection joins "room" and reads until closed; server clients by path."""

    def __init__(self, hub: trionos.Hub) -> None:
        self.hub = hub
        self.clients: dict[str, trionos.Client] = {}
        self.closed_at: dict[str, float] = {}
        self._changed = trio.Event()

    async def __call__(self, req: trionos.Request) -> None:
        ws = await req.accept()
        async with self.hub.client(ws) as client:
            self.hub.join(client, "room")
            self.clients[req.path] = client
            self._changed.set()
            self._changed = trio.Event()
            try:
                async for _ in ws:
                    pass
            except trionos.ConnectionClosed:
                pass  # a peer that went away without a close frame
            finally:
                self.closed_at[req.path] = trio.current_time()

    async def wait_for(self, count: int) -> None:
        while len(self.clients) < count:
            await self._changed.wait()


async def read_slowly(peer: Any, received: list[int]) -> None:
    """Read READ_SIZE bytes every READ_EVERY seconds until the stream ends."""
    while True:
        await trio.sleep(READ_EVERY)
        try:
            data = await peer.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        received.append(len(data))


async def fast_reader(app: Any, path: str, count: int, done_at: list[float]) -> None:
    """Receive ``count`` numbered messages in order; note when the last one came."""
    async with app.connect(path, message_queue_size=64) as ws:
        for i in range(count):
            message = await ws.recv()
            assert int.from_bytes(message[:4], "big") == i
        done_at.append(trio.current_time())


async def broadcast_numbered(hub: trionos.Hub, count: int) -> None:
    for i in range(count):
        await hub.broadcast("room", i.to_bytes(4, "big") + MESSAGE)


async def test_a_member_that_reads_64_kib_every_half_second_is_closed_after_grace_in_total(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A member reading 64 KiB every 0.5 s is closed with 1008 within grace + one read interval of
    the flood's start, and the 3 fast members get all 4 MiB within that time (it used to be paced
    to the slow reader: 32 s)."""
    count = 1024  # 4 MiB
    hub = trionos.Hub(grace=GRACE)
    room = Room(hub)
    done_at: list[float] = []
    slow_received: list[int] = []
    async with hub, open_memory_server(room, max_outbox_bytes=OUTBOX, heartbeat=None) as app:
        async with slow_consumer(app, "/slow") as peer, trio.open_nursery() as slow_reader:
            slow_reader.start_soon(read_slowly, peer, slow_received)
            with trio.fail_after(60):
                async with trio.open_nursery() as flood:
                    for i in range(FAST_READERS):
                        flood.start_soon(fast_reader, app, f"/fast{i}", count, done_at)
                    await room.wait_for(FAST_READERS + 1)
                    started = trio.current_time()
                    flood.start_soon(broadcast_numbered, hub, count)
            slow = room.clients["/slow"]
            assert slow.ws.close_code == 1008
            assert slow.ws.close_reason == "slow client: outbox full for 2 s in total"
            slow_reader.cancel_scope.cancel()
    assert slow_received, "the slow member did read"
    assert room.closed_at["/slow"] - started <= GRACE + READ_EVERY
    assert max(done_at) - started <= GRACE + READ_EVERY
    assert hub.slow_clients_dropped == 1


async def test_a_member_that_falls_behind_bursts_and_catches_up_stays(autojump_clock: trio.abc.Clock) -> None:
    """The total starts again once the room has gone `grace` without waiting: three bursts that
    each make the room wait about a second for a slow reader (3 s in all) do not drop it."""
    burst = 64  # 256 KiB: 128 KiB fit in the pipe and the outbox, the rest waits about 1 s
    hub = trionos.Hub(grace=GRACE)
    room = Room(hub)
    slow_received: list[int] = []
    async with hub, open_memory_server(room, max_outbox_bytes=OUTBOX, heartbeat=None) as app:
        async with slow_consumer(app, "/slow") as peer, trio.open_nursery() as slow_reader:
            slow_reader.start_soon(read_slowly, peer, slow_received)
            waits = []
            for n in range(3):
                done_at: list[float] = []
                async with trio.open_nursery() as flood:
                    flood.start_soon(fast_reader, app, f"/fast{n}", burst, done_at)
                    await room.wait_for(2 + n)
                    started = trio.current_time()
                    flood.start_soon(broadcast_numbered, hub, burst)
                waits.append(done_at[0] - started)
                await trio.sleep(GRACE * 2)  # it catches up
            assert not room.clients["/slow"].ws.closed
            slow_reader.cancel_scope.cancel()
    assert all(0.5 <= wait < GRACE for wait in waits), waits
    assert sum(waits) > GRACE
    assert hub.slow_clients_dropped == 0


async def test_equally_slow_members_pace_the_room_and_none_is_dropped(autojump_clock: trio.abc.Clock) -> None:
    """When every member reads 64 KiB every 0.5 s, none is an outlier: the room goes at their pace
    (a 1 MiB flood takes seconds, far past grace) and nobody is closed. The waits do not all land
    on the member that joined first."""
    count = 256  # 1 MiB
    hub = trionos.Hub(grace=GRACE)
    room = Room(hub)
    received: list[list[int]] = [[], []]
    async with hub, open_memory_server(room, max_outbox_bytes=OUTBOX, heartbeat=None) as app:
        async with (
            slow_consumer(app, "/a") as a,
            slow_consumer(app, "/b") as b,
            trio.open_nursery() as readers,
        ):
            readers.start_soon(read_slowly, a, received[0])
            readers.start_soon(read_slowly, b, received[1])
            await room.wait_for(2)
            started = trio.current_time()
            await broadcast_numbered(hub, count)
            elapsed = trio.current_time() - started
            assert not room.clients["/a"].ws.closed and not room.clients["/b"].ws.closed
            readers.cancel_scope.cancel()
    assert elapsed > 2 * GRACE
    assert hub.slow_clients_dropped == 0
