"""Cross-node history coordination on its own, against a scripted broker: holding, floors, in flight."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trionos
from trionos import HistoryBounds, Position, Recovery
from trionos._fanout import Feed, SlowClientPolicy
from trionos._history import HistoryEntry
from trionos._local_broker import LocalBroker
from trionos._shared_history import MAX_HELD, SharedHistory

BOUNDS = HistoryBounds()


class ScriptedBroker(LocalBroker):
    """A shared broker whose history answers when the test says so."""

    shared = True

    def __init__(self) -> None:
        super().__init__(node_id="n")
        self.offset = 0
        self.answer = trio.Event()
        self.recovery = Recovery(Position("e", 0), (), True)
        self.asked: list[tuple[Position | None, int | None]] = []

    async def history_append(
        self,
        room: str,
        payload: str | bytes,
        *,
        exclude_id: str | None,
        exclude_identity: str | None,
        bounds: HistoryBounds,
        offset_member: str | None,
        epoch: str,
    ) -> Position:
        await trio.lowlevel.checkpoint()
        self.offset += 1
        return Position("e", self.offset)

    async def history_recover(
        self,
        room: str,
        since: Position | None,
        identity: str | None,
        *,
        bounds: HistoryBounds,
        epoch: str,
        last: int | None = None,
    ) -> Recovery:
        self.asked.append((since, last))
        await self.answer.wait()
        return self.recovery


def entry(offset: int) -> HistoryEntry:
    return HistoryEntry(offset, f"m{offset}".encode(), None, 0.0)


async def test_frames_held_during_the_read_follow_the_replay_without_duplicates() -> None:
    """What arrives during the read is held; offsets the replay covers are dropped, later ones kept."""
    broker = ScriptedBroker()
    shared = SharedHistory[str](broker, trionos.Metrics(), lambda: "new", 2.0)
    broker.recovery = Recovery(Position("e", 5), (entry(4), entry(5)), True)
    result: list[tuple[Recovery, list[bytes]]] = []

    async def join() -> None:
        result.append(
            await shared.recover("ann", "ann", "r", since=Position("e", 3), last=None, bounds=BOUNDS)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join)
        await trio.testing.wait_all_tasks_blocked()
        assert shared.divert(("ann", "bob"), b"m5", 5) == ("bob",)  # in the replay as well
        assert shared.divert(("ann",), b"m6", 6) == ()
        assert shared.divert(("ann",), b"presence", None) == ()  # no offset: always kept
        broker.answer.set()
    ((recovery, later),) = result
    assert later == [b"m6", b"presence"]
    assert recovery.position == Position("e", 6) and [e.offset for e in recovery.entries] == [4, 5]
    assert broker.asked == [(Position("e", 3), None)]
    # The subscription may still bring 5 and 6: the floor drops them, and 7 ends it.
    assert shared.above_floor("r", ("ann", "bob"), 6) == ("bob",)
    assert shared.above_floor("r", ("ann",), 7) == ("ann",)
    assert shared.above_floor("r", ("ann",), 6) == ("ann",)  # floor gone: in order from here
    assert shared.idle


async def test_a_failed_or_cancelled_read_releases_what_was_held() -> None:
    """Cancelling the read leaves nothing held; the last messages are asked for with last=."""
    broker = ScriptedBroker()
    shared = SharedHistory[str](broker, trionos.Metrics(), lambda: "new", 2.0)
    with trio.move_on_after(0.01):
        await shared.recover("ann", None, "r", since=None, last=20, bounds=BOUNDS)
    assert shared.held == {} and shared.idle
    assert broker.asked == [(None, 20)]


def test_held_frames_are_bounded() -> None:
    """At most MAX_HELD frames are held for one joining client; the rest are dropped."""
    shared = SharedHistory[str](ScriptedBroker(), trionos.Metrics(), lambda: "new", 2.0)
    shared.held["ann"] = [(None, b"")] * MAX_HELD
    assert shared.divert(("ann",), b"one more", 1) == ()
    assert len(shared.held["ann"]) == MAX_HELD


def test_held_frames_are_bounded_in_bytes_too() -> None:
    """At most max_held_bytes of frames are held for one joining client (one larger frame alone)."""
    shared = SharedHistory[str](ScriptedBroker(), trionos.Metrics(), lambda: "new", 2.0, max_held_bytes=100)
    shared.held["ann"] = []
    assert shared.divert(("ann", "bob"), b"x" * 150, 1) == ("bob",)  # nothing held yet: it fits
    assert shared.divert(("ann",), b"y", 2) == ()
    assert shared.held["ann"] == [(1, b"x" * 150)]


async def test_a_broadcast_holds_a_feed_slot_until_its_message_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With local members the sender waits for its own delivery (at most grace); without, it only appends."""
    broker = ScriptedBroker()
    metrics = trionos.Metrics()
    shared = SharedHistory[str](broker, metrics, lambda: "new", 2.0)

    async def broadcast(text: str, feed: Feed[str] | None) -> Position:
        return await shared.broadcast(
            "r", text, feed, exclude_id=None, exclude_identity=None, offset_member=None, bounds=BOUNDS
        )

    assert await broadcast("no members", None) == Position("e", 1)
    room = Feed[str]("r", 4, SlowClientPolicy.DISCONNECT)
    done: list[Position] = []

    async def send() -> None:
        done.append(await broadcast("hi", room))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and not shared.idle
        shared.delivered("r", 2)
    assert done == [Position("e", 2)] and shared.idle and metrics.history_appended == 2
    started = trio.current_time()
    await broadcast("never delivered", room)
    assert trio.current_time() - started == pytest.approx(2.0)
    assert shared.idle
