"""The hub's history: positions on broadcast, and joining at a position with no gap and no duplicate."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trionos
from trionos._hub import HISTORY_SWEEP_INTERVAL
from trionos.testing import MemoryServer, open_memory_server


@attrs.frozen
class Note:
    text: str
    offset: int | None = None


CODEC: trionos.Codec[Any] = trionos.Codec(Note)


class Server:
    """A hub and a memory server whose connections register as the client named by their path."""

    def __init__(self, hub: trionos.Hub, server: MemoryServer) -> None:
        self.hub = hub
        self.server = server
        self.clients: dict[str, trionos.Client] = {}
        self._changed = trio.Event()

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        name = req.path.strip("/").split("-")[0]
        async with self.hub.client(ws, client_id=req.path.strip("/"), identity=name) as client:
            self.clients[name] = client
            self._changed.set()
            self._changed = trio.Event()
            async for _ in ws:
                pass

    async def client(self, name: str) -> trionos.Client:
        while name not in self.clients:
            await self._changed.wait()
        return self.clients.pop(name)


@pytest.fixture
async def setup(nursery: trio.Nursery) -> AsyncIterator[Server]:
    epochs = itertools.count()
    hub = await nursery.start(
        trionos.Hub(
            history=trionos.HistoryBounds(max_messages=5), codec=CODEC, new_epoch=lambda: f"e{next(epochs)}"
        ).run
    )
    holder: list[Server] = []

    async def handler(req: trionos.Request) -> None:
        await holder[0].handler(req)

    async with open_memory_server(handler, heartbeat=None) as server:
        holder.append(Server(hub, server))
        yield holder[0]


async def read(ws: trionos.WebSocket, n: int) -> list[Any]:
    return [json.loads(await ws.recv()) for _ in range(n)]


async def test_broadcast_returns_the_position_and_stamps_the_offset(setup: Server) -> None:
    """A broadcast into a room with history returns its position and carries its offset on the wire."""
    hub = setup.hub
    async with setup.server.connect("/ann") as ws:
        ann = await setup.client("ann")
        hub.join(ann, "r")
        first = await hub.broadcast("r", Note("a"))
        second = await hub.broadcast("r", Note("b"))
        assert first == 1 and first.position == trionos.Position("e0", 1)
        assert second.position == trionos.Position("e0", 2)
        assert await read(ws, 2) == [
            {"type": "note", "text": "a", "offset": 1},
            {"type": "note", "text": "b", "offset": 2},
        ]
        hub.set_room_history("plain", None)
        hub.join(ann, "plain")
        plain = await hub.broadcast("plain", Note("c"))
        assert plain == 1 and plain.position is None
        assert await read(ws, 1) == [{"type": "note", "text": "c", "offset": None}]
    assert hub.metrics.history_appended == 2


async def test_a_client_back_at_its_position_gets_the_welcome_the_missed_messages_then_live(
    setup: Server,
) -> None:
    """Rejoining at a position replays exactly what was missed, after the welcome and before live traffic."""
    hub = setup.hub
    async with setup.server.connect("/bob") as bob_ws:
        bob = await setup.client("bob")
        hub.join(bob, "r")
        await hub.broadcast("r", Note("1"))
        async with setup.server.connect("/ann-1") as ws:
            ann = await setup.client("ann")
            hub.join(ann, "r")
            seen = await hub.broadcast("r", Note("2"))
            assert [m["offset"] for m in await read(ws, 1)] == [2]
        for text in "345":
            await hub.broadcast("r", Note(text))
        assert seen.position is not None
        async with setup.server.connect("/ann-2") as ws:
            ann = await setup.client("ann")
            recovery = await hub.join_with_history(
                ann, "r", since=seen.position, welcome=lambda r: Note(f"welcome {r.complete}")
            )
            await hub.broadcast("r", Note("6"))
            got = await read(ws, 5)
        assert recovery.complete and recovery.position == trionos.Position("e0", 5)
        assert [m["text"] for m in got] == ["welcome True", "3", "4", "5", "6"]
        assert len(await read(bob_ws, 6)) == 6
    assert (hub.metrics.recoveries_complete, hub.metrics.messages_replayed) == (1, 3)


async def test_no_gap_and_no_duplicate_while_others_broadcast_during_the_join(setup: Server) -> None:
    """Broadcasts racing with the join land either in the replay or live, never both, never neither."""
    hub = setup.hub
    hub.set_room_history("r", trionos.HistoryBounds(max_messages=1000))
    async with setup.server.connect("/bob") as bob_ws:
        bob = await setup.client("bob")
        hub.join(bob, "r")
        start = hub.position("r")
        assert start is not None
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(200):
                await hub.broadcast("r", Note(str(i)), exclude=bob)
                sent += 1

        async with setup.server.connect("/ann", message_queue_size=1000) as ws:
            ann = await setup.client("ann")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                while sent < 100:
                    await trio.lowlevel.checkpoint()
                await hub.join_with_history(ann, "r", since=start)
            offsets = [m["offset"] for m in await read(ws, 200)]
        assert offsets == list(range(1, 201))
        del bob_ws


async def test_a_message_that_excluded_its_sender_is_not_replayed_to_that_identity(setup: Server) -> None:
    """Exclusion survives reconnection: the history remembers the excluded identity, not the connection."""
    hub = setup.hub
    async with setup.server.connect("/ann-1"):
        ann = await setup.client("ann")
        hub.join(ann, "r")
        start = hub.position("r")
        await hub.broadcast("r", Note("mine"), exclude=ann)
        await hub.broadcast("r", Note("theirs"))
    assert start is not None
    async with setup.server.connect("/ann-2") as ws:
        ann = await setup.client("ann")
        recovery = await hub.join_with_history(ann, "r", since=start)
        assert recovery.complete
        assert [m["text"] for m in await read(ws, 1)] == ["theirs"]
    async with setup.server.connect("/cat") as ws:
        cat = await setup.client("cat")
        await hub.join_with_history(cat, "r", since=start)
        assert [m["text"] for m in await read(ws, 2)] == ["mine", "theirs"]


async def test_a_trimmed_or_unknown_position_is_reported_as_partial(setup: Server) -> None:
    """Past the history's bound, or from another epoch, recovery says so and gives what is kept."""
    hub = setup.hub
    for i in range(8):
        await hub.broadcast("r", Note(str(i)))
    async with setup.server.connect("/ann") as ws:
        ann = await setup.client("ann")
        trimmed = await hub.join_with_history(ann, "r", since=trionos.Position("e0", 1))
        assert not trimmed.complete
        assert [e.offset for e in trimmed.entries] == [4, 5, 6, 7, 8]
        assert [m["offset"] for m in await read(ws, 5)] == [4, 5, 6, 7, 8]
        hub.leave(ann, "r")
        other = await hub.join_with_history(ann, "r", since=trionos.Position("restarted", 8))
        assert not other.complete and len(other.entries) == 5
    assert hub.metrics.recoveries_partial == 2
    assert hub.metrics.history_trimmed == 3


async def test_joining_with_history_needs_a_room_that_keeps_one(setup: Server) -> None:
    """A room without history refuses join_with_history with a message that says how to turn it on."""
    setup.hub.set_room_history("plain", False)
    async with setup.server.connect("/ann"):
        ann = await setup.client("ann")
        with pytest.raises(ValueError, match="keeps no history"):
            await setup.hub.join_with_history(ann, "plain")
    assert setup.hub.position("plain") is None


async def test_a_join_with_the_last_messages_gets_the_welcome_them_oldest_first_then_live(
    setup: Server,
) -> None:
    """join_with_history(last=N): the welcome, the room's last N (its own too), then live; no duplicate."""
    hub = setup.hub
    async with setup.server.connect("/bob") as bob_ws:
        bob = await setup.client("bob")
        hub.join(bob, "r")
        for text in "1234":
            await hub.broadcast("r", Note(text), exclude=bob)  # bob's own: a fresh view shows them
        async with setup.server.connect("/bob-2") as ws:
            again = await setup.client("bob")
            recovery = await hub.join_with_history(
                again, "r", last=2, welcome=lambda r: Note(f"welcome {len(r.entries)}")
            )
            await hub.broadcast("r", Note("5"))
            got = await read(ws, 4)
        assert [m["text"] for m in got] == ["welcome 2", "3", "4", "5"]
        assert [m["offset"] for m in got[1:]] == [3, 4, 5]
        assert recovery.complete and recovery.position == trionos.Position("e0", 4)
        assert len(await read(bob_ws, 1)) == 1  # only "5": the others excluded bob
    assert hub.metrics.messages_replayed == 2
    assert hub.metrics.recoveries_complete == hub.metrics.recoveries_partial == 0


async def test_the_last_messages_are_bounded_by_the_history_and_say_when_some_were_trimmed(
    setup: Server,
) -> None:
    """More than the room keeps replays what it keeps (at most max_messages), marked incomplete."""
    hub = setup.hub
    async with setup.server.connect("/ann") as ws:
        ann = await setup.client("ann")
        hub.join(ann, "q")
        for n in range(7):
            await hub.broadcast("q", Note(str(n)))
        await read(ws, 7)
        hub.leave(ann, "q")
        everything = await hub.join_with_history(ann, "q", last=1000)
        assert [e.offset for e in everything.entries] == [3, 4, 5, 6, 7]  # max_messages=5
        assert everything.complete  # clamped to the bound: all five it asked for are there
        assert [m["offset"] for m in await read(ws, 5)] == [3, 4, 5, 6, 7]
        hub.leave(ann, "q")
        hub.set_room_history("q", trionos.HistoryBounds(max_messages=10))
        trimmed = await hub.join_with_history(ann, "q", last=10)
        assert len(trimmed.entries) == 5 and not trimmed.complete
        hub.leave(ann, "q")
        nothing = await hub.join_with_history(ann, "q", last=0)
        assert nothing.entries == () and nothing.complete


async def test_a_join_with_the_last_messages_refuses_bad_arguments(setup: Server) -> None:
    """since and last together, or a negative or non-integer last, raise ValueError before any join."""
    hub = setup.hub
    async with setup.server.connect("/ann"):
        ann = await setup.client("ann")
        start = hub.position("r")
        assert start is not None
        with pytest.raises(ValueError, match="since or last, not both"):
            await hub.join_with_history(ann, "r", since=start, last=1)
        for bad in (-1, True, 1.5):
            with pytest.raises(ValueError, match="last must be an integer of at least 0"):
                await hub.join_with_history(ann, "r", last=bad)  # type: ignore[arg-type]  # untyped callers
        assert hub.rooms_of(ann) == []


async def test_the_hub_ages_out_idle_histories_on_a_timer(autojump_clock: trio.testing.MockClock) -> None:
    """With no client and no read, aged messages and empty rooms are forgotten by the hub's sweep."""
    bounds = trionos.HistoryBounds(max_age=60.0)
    async with trionos.Hub(history=bounds, codec=CODEC) as hub:
        for n in range(5):
            await hub.broadcast(f"room-{n}", Note("x" * 1000))
        before = hub.position("room-0")
        assert before is not None and before.offset == 1
        assert hub.position("empty") is not None  # a join's read starts an empty history
        await trio.sleep(60 + 2 * HISTORY_SWEEP_INTERVAL)
        assert hub.metrics.history_rooms_dropped == 6
        after = hub.position("room-0")
        assert after is not None and after.offset == 0 and after.epoch != before.epoch


async def test_a_replay_goes_in_pieces_so_a_client_that_never_reads_is_closed_after_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2 MiB of history replayed to a client that reads nothing: the outbox bound and the policy apply."""
    bounds = trionos.HistoryBounds(max_messages=1000, max_bytes=4 << 20)
    async with trionos.Hub(history=bounds) as hub:
        for _ in range(64):
            await hub.broadcast("r", "x" * (32 << 10))
        closed = trio.Event()

        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            async with hub.client(ws) as client:
                await hub.join_with_history(client, "r", since=trionos.Position("unknown", 0))
                with pytest.raises(trionos.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1008
                closed.set()

        async with open_memory_server(handler, heartbeat=None) as server, server.connect("/"):
            with trio.fail_after(3 * hub.grace):
                await closed.wait()  # never reading
        assert hub.metrics.slow_client_disconnects == 1


async def test_the_sweep_interval_is_a_hub_setting(autojump_clock: trio.testing.MockClock) -> None:
    """Hub(history_sweep_interval=5) forgets an idle empty history after 5 s, not the default 30."""
    async with trionos.Hub(history=True, history_sweep_interval=5) as hub:
        assert hub.position("empty") is not None  # a join's read starts an empty history
        await trio.sleep(5.5)
        assert hub.metrics.history_rooms_dropped == 1
