"""A room's feed: batching, order, stalls and the end of the fan-out, with a recording delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trionos._fanout import BATCH_BYTES, FEED_MAX_BYTES, Feed, SlowClientPolicy


class Recording:
    """A delivery that records every write; ``slow`` clients refuse until ``release`` is set."""

    def __init__(self) -> None:
        self.writes: list[tuple[bytes, tuple[str, ...]]] = []
        self.waits: list[tuple[str, bytes]] = []
        self.slow: set[str] = set()
        self.release = trio.Event()

    def deliver_now(self, feed: Feed[str], frame: bytes, recipients: tuple[str, ...]) -> tuple[str, ...]:
        self.writes.append((frame, recipients))
        return tuple(r for r in recipients if r in self.slow)

    async def wait_for_room(self, client: str, frame: bytes) -> None:
        await self.release.wait()
        self.waits.append((client, frame))


@asynccontextmanager
async def full_and_stalled(room: Feed[str], delivery: Recording) -> AsyncIterator[trio.Nursery]:
    """Run *room*'s fan-out (a one-slot channel) stalled on "slow" with its channel full; the block
    gets a nursery that outlives the fan-out, which is cancelled when the block ends."""
    delivery.slow.add("slow")  # the fan-out waits on "slow" while the channel fills
    async with trio.open_nursery() as outer:
        with trio.CancelScope() as stop:
            async with trio.open_nursery() as fan_out:
                fan_out.start_soon(room.run, delivery.deliver_now, delivery.wait_for_room, lambda: None)
                room.put_nowait(b"stalls", ("slow",))
                await trio.testing.wait_all_tasks_blocked()
                room.put_nowait(b"fills", ("slow",))
                yield outer
                stop.cancel()


#: A feed whose fan-out task runs, its recording delivery, and whether the task has ended.
Running = tuple[Feed[str], Recording, list[bool]]


@pytest.fixture
async def feed(nursery: trio.Nursery) -> Running:
    feed = Feed[str]("room", 64, SlowClientPolicy.DISCONNECT)
    delivery = Recording()
    ended: list[bool] = []
    nursery.start_soon(feed.run, delivery.deliver_now, delivery.wait_for_room, lambda: ended.append(True))
    return feed, delivery, ended


async def test_a_burst_for_the_same_recipients_is_one_write(feed: Running) -> None:
    """Frames queued in one go for the same recipients are joined in order into one write for all."""
    room, delivery, _ = feed
    everyone = ("a", "b")
    for frame in (b"1", b"2", b"3"):
        room.put_nowait(frame, everyone)
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"123", everyone)]
    assert room.pending == 0


async def test_a_burst_for_different_recipients_is_one_write_per_recipient(feed: Running) -> None:
    """Each recipient gets the frames meant for it, in order, in one write."""
    room, delivery, _ = feed
    everyone = ("a", "b")
    for frame in (b"1", b"2", b"3"):
        room.put_nowait(frame, everyone)
    room.put_nowait(b"4", ("a",))
    room.put_nowait(b"5", everyone)
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"12345", ("a",)), (b"1235", ("b",))]
    assert room.pending == 0


async def test_recipients_that_get_the_same_frames_share_a_write(feed: Running) -> None:
    """A chat burst (each message to all but its sender): who gets the same frames shares a write."""
    room, delivery, _ = feed
    room.put_nowait(b"1", ("a", "b", "c"))
    room.put_nowait(b"2", ("a", "b"))
    room.put_nowait(b"3", ("c",))
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"12", ("a", "b")), (b"13", ("c",))]


async def test_a_stall_in_a_mixed_batch_holds_what_follows_for_everyone(feed: Running) -> None:
    """A slow recipient of a mixed batch is waited for before the next batch is written to anyone."""
    room, delivery, _ = feed
    delivery.slow.add("slow")
    room.put_nowait(b"1", ("slow", "fast"))
    room.put_nowait(b"2", ("fast",))
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"1", ("slow",))]  # the stall comes first, before "fast"'s write
    delivery.slow.clear()
    room.put_nowait(b"3", ("slow", "fast"))
    room.flush(delivery.deliver_now)  # held too: the stall is not over
    assert delivery.writes == [(b"1", ("slow",))]
    delivery.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.waits == [("slow", b"1")]
    assert delivery.writes[1:] == [(b"12", ("fast",)), (b"3", ("slow", "fast"))]


async def test_batches_stop_at_the_byte_limit(feed: Running) -> None:
    """Joined writes stay within BATCH_BYTES; a larger frame goes alone; nothing is reordered."""
    room, delivery, _ = feed
    quarter = b"q" * (BATCH_BYTES // 4)
    big = b"B" * (BATCH_BYTES + 1)
    frames = [quarter] * 6 + [big, quarter]
    for frame in frames:
        room.put_nowait(frame, ("a",))
    await trio.testing.wait_all_tasks_blocked()
    sizes = [len(frame) for frame, _ in delivery.writes]
    assert all(size <= BATCH_BYTES for size in sizes if size != len(big))
    assert b"".join(frame for frame, _ in delivery.writes) == b"".join(frames)
    assert sizes == [BATCH_BYTES, 2 * len(quarter), len(big), len(quarter)]


async def test_a_lone_broadcast_is_written_promptly(feed: Running) -> None:
    """Gathering ends at the first scheduler tick that brings nothing new."""
    room, delivery, _ = feed
    await trio.testing.wait_all_tasks_blocked()
    room.put_nowait(b"x", ("a",))
    for _ in range(3):
        await trio.lowlevel.checkpoint()
    assert delivery.writes == [(b"x", ("a",))]


async def test_a_stall_holds_everything_behind_it(feed: Running) -> None:
    """Nothing overtakes a frame a slow client must wait for, not even a flush from another task."""
    room, delivery, _ = feed
    delivery.slow.add("slow")
    room.put_nowait(b"first", ("slow", "fast"))
    await trio.testing.wait_all_tasks_blocked()
    delivery.slow.clear()
    room.put_nowait(b"second", ("fast",))
    room.flush(delivery.deliver_now)  # a direct write on "fast" asks for a flush: it must wait too
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"first", ("slow", "fast"))]
    delivery.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.waits == [("slow", b"first")]
    assert delivery.writes[1:] == [(b"second", ("fast",))]


async def test_flush_writes_what_is_queued_at_once(feed: Running) -> None:
    """A flush from another task writes the queue synchronously; the fan-out then finds it empty."""
    room, delivery, _ = feed
    await trio.testing.wait_all_tasks_blocked()
    room.put_nowait(b"1", ("a",))
    room.put_nowait(b"2", ("a",))
    room.flush(delivery.deliver_now)
    assert delivery.writes == [(b"12", ("a",))]
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"12", ("a",))]


async def test_the_bound_makes_put_wait_and_put_nowait_refuse(nursery: trio.Nursery) -> None:
    """With the fan-out busy, the channel holds queue_size broadcasts and no more."""
    room = Feed[str]("room", 2, SlowClientPolicy.DISCONNECT)
    room.put_nowait(b"1", ("a",))
    room.put_nowait(b"2", ("a",))
    with pytest.raises(trio.WouldBlock):
        room.put_nowait(b"3", ("a",))
    with trio.CancelScope() as waited:
        async with trio.open_nursery() as putters:
            putters.start_soon(room.put, b"3", ("a",))
            await trio.testing.wait_all_tasks_blocked()
            assert room.pending == 3  # waiting in put, its frame counted
            waited.cancel()
    assert waited.cancelled_caught
    assert room.pending == 2  # the cancelled put left nothing behind
    delivery = Recording()
    room.flush(delivery.deliver_now)
    assert delivery.writes == [(b"12", ("a",))]


async def test_close_writes_what_is_queued_then_ends(feed: Running) -> None:
    """Closing the feed ends the fan-out task after the frames already queued."""
    room, delivery, ended = feed
    room.put_nowait(b"last", ("a",))
    room.close()
    await trio.testing.wait_all_tasks_blocked()
    assert delivery.writes == [(b"last", ("a",))]
    assert ended == [True]
    with pytest.raises(trio.ClosedResourceError):
        room.put_nowait(b"late", ("a",))


async def test_a_cancelled_fan_out_writes_what_is_queued_then_drops_later_puts() -> None:
    """When the hub stops, queued frames still go out (without waiting) and later puts are dropped,
    not raised, so goodbyes from handlers being shut down cannot fail."""
    room = Feed[str]("room", 64, SlowClientPolicy.DISCONNECT)
    delivery = Recording()
    ended: list[bool] = []
    with trio.CancelScope() as stop:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                room.run, delivery.deliver_now, delivery.wait_for_room, lambda: ended.append(True)
            )
            await trio.testing.wait_all_tasks_blocked()
            room.put_nowait(b"queued", ("a",))
            stop.cancel()
    assert delivery.writes == [(b"queued", ("a",))]
    assert ended == [True] and room.stopped
    assert await room.put(b"goodbye", ("a",)) is False
    assert room.pending == 0
    assert delivery.writes == [(b"queued", ("a",))]


async def test_a_put_waiting_on_a_full_channel_is_dropped_when_the_fan_out_ends() -> None:
    """A broadcast waiting for room when the fan-out ends returns False instead of raising."""
    room = Feed[str]("room", 1, SlowClientPolicy.DISCONNECT)
    delivery = Recording()
    results: list[bool] = []

    async def put_late() -> None:
        results.append(await room.put(b"late", ("slow",)))

    async with full_and_stalled(room, delivery) as outer:
        outer.start_soon(put_late)
        await trio.testing.wait_all_tasks_blocked()
        assert room.pending == 2
    assert results == [False]
    assert delivery.writes == [(b"stalls", ("slow",))]  # a stalled room is not flushed on the way out


async def test_wait_for_room_waits_while_the_channel_and_the_expected_broadcasts_fill_it() -> None:
    """A producer whose broadcasts arrive later waits for as many free slots as it expects, then goes."""
    room = Feed[str]("room", 3, SlowClientPolicy.DISCONNECT)
    room.put_nowait(b"1", ("a",))
    expected = [1]  # one broadcast of this node is on its way back from the broker
    went: list[bool] = []

    async def producer() -> None:
        await room.wait_for_room(lambda: expected[0] + 1)
        went.append(True)

    async with trio.open_nursery() as nursery:
        room.put_nowait(b"2", ("a",))  # 2 queued + 1 expected + this one: over 3
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert went == []
        room.flush(Recording().deliver_now)  # the fan-out takes both off the channel
    assert went == [True]
    assert room.has_room(3) and not room.has_room(4)


async def test_a_producer_waiting_for_room_is_released_when_the_fan_out_ends() -> None:
    """When the fan-out ends, a producer waiting for room goes on (nothing will ever be taken)."""
    room = Feed[str]("room", 1, SlowClientPolicy.DISCONNECT)
    delivery = Recording()
    released: list[bool] = []

    async def producer() -> None:
        await room.wait_for_room(lambda: 1)
        released.append(room.stopped)

    async with full_and_stalled(room, delivery) as outer:
        outer.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert released == []
    assert released == [True]


async def test_the_byte_bound_makes_put_wait_and_put_nowait_refuse_below_the_count() -> None:
    """A feed holds FEED_MAX_BYTES of frames whatever its count bound; one larger frame fits when empty."""
    room = Feed[str]("room", 64, SlowClientPolicy.DISCONNECT)
    big = b"x" * (FEED_MAX_BYTES // 4)
    for _ in range(4):
        room.put_nowait(big, ("a",))
    assert room.pending_bytes == FEED_MAX_BYTES and not room.has_room(1, 1)
    with pytest.raises(trio.WouldBlock):
        room.put_nowait(b"1", ("a",))
    put_done = trio.Event()

    async def put_one() -> None:
        assert await room.put(b"late", ("a",))
        put_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put_one)
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set() and room.pending == 4  # waiting for bytes, not yet counted
        delivery = Recording()
        room.flush(delivery.deliver_now)  # the fan-out takes them off: bytes free up
    assert put_done.is_set() and room.pending == 1 and room.pending_bytes == 4
    room.flush(Recording().deliver_now)
    room.put_nowait(b"y" * (FEED_MAX_BYTES + 1), ("a",))  # larger than the bound, into an empty feed
    assert room.pending_bytes == FEED_MAX_BYTES + 1
