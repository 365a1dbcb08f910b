"""Slow-client delivery on its own: the policies, the stall accounting, and what a closed peer gets."""

from __future__ import annotations

import trio
import trio.testing

import trionos
from trionos._delivery import SLOW_CLIENT_CLOSE_CODE, SlowClientDelivery
from trionos._fanout import Feed, SlowClientPolicy
from trionos._transport import WriteListener


class FakeTransport:
    """A HubTransport with a byte bound and no socket: frames queue until ``drain`` frees room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queued: list[bytes] = []
        self.write_listener: WriteListener | None = None
        self._progress = trio.Event()

    def _size(self) -> int:
        return sum(map(len, self.queued))

    def write_nowait(self, frame: bytes) -> bool:
        if self.queued and self._size() + len(frame) > self.capacity:
            return False
        self.queued.append(frame)
        return True

    def write_dropping_oldest(self, frame: bytes) -> int:
        dropped = 0
        while self.queued and self._size() + len(frame) > self.capacity:
            self.queued.pop(0)
            dropped += 1
        self.queued.append(frame)
        return dropped

    async def wait_for_progress(self) -> None:
        await self._progress.wait()

    def drain(self) -> None:
        """The peer read everything queued."""
        self.queued.clear()
        self._progress.set()
        self._progress = trio.Event()


class FakeConnection:
    """A HubConnection around a FakeTransport that records how it was aborted."""

    def __init__(self, name: str, capacity: int) -> None:
        self.id = name
        self.transport = FakeTransport(capacity)
        self.closed = False
        self.aborted: tuple[int, str] | None = None

    def abort(self, code: int, reason: str) -> None:
        self.closed = True
        self.aborted = (code, reason)


class Member:
    """A recipient: what the hub's Client is to delivery."""

    def __init__(self, name: str, capacity: int = 10) -> None:
        self.ws = FakeConnection(name, capacity)
        self.transport = self.ws.transport

    def __repr__(self) -> str:
        return f"<Member {self.ws.id}>"


def feed(policy: SlowClientPolicy) -> Feed[Member]:
    return Feed[Member]("r", 4, policy)


def test_drop_oldest_never_waits_and_counts_what_it_dropped() -> None:
    """Under drop_oldest every recipient takes the frame at once; the oldest queued frames go."""
    metrics = trionos.Metrics()
    delivery = SlowClientDelivery(2.0, metrics)
    full, fine = Member("full", capacity=10), Member("fine", capacity=100)
    full.transport.queued = [b"old-1", b"old-2"]
    assert delivery.deliver_now(feed(SlowClientPolicy.DROP_OLDEST), b"new-frame", (full, fine)) == ()
    assert full.transport.queued == [b"new-frame"] and fine.transport.queued == [b"new-frame"]
    assert metrics.frames_dropped == 2
    assert (metrics.messages_out, metrics.bytes_out) == (2, 18)


def test_disconnect_hands_back_the_full_ones_least_indebted_first() -> None:
    """Under disconnect a recipient whose outbox is full is returned for waiting; a closed one is skipped."""
    delivery = SlowClientDelivery(2.0, trionos.Metrics())
    a, b, closed, fine = Member("a"), Member("b"), Member("closed"), Member("fine", capacity=100)
    for member in (a, b, closed):
        member.transport.queued = [b"x" * 10]
    closed.ws.closed = True
    delivery._stall_times[a] = (1.5, 0.0)  # a made the room wait before: it goes last
    slow = delivery.deliver_now(feed(SlowClientPolicy.DISCONNECT), b"frame", (a, b, closed, fine))
    assert slow == (b, a)
    assert fine.transport.queued == [b"frame"] and closed.transport.queued == [b"x" * 10]


async def test_waits_add_up_across_stalls_until_grace_then_the_client_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1.5 s of waiting, a drain, then 0.5 s more within grace: closed with 1008 after 2 s in total."""
    metrics = trionos.Metrics()
    delivery = SlowClientDelivery(2.0, metrics)
    slow = Member("slow")
    slow.transport.queued = [b"x" * 10]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.wait_for_room, slow, b"first")
        await trio.sleep(1.5)
        slow.transport.drain()
    assert slow.transport.queued == [b"first"] and slow.ws.aborted is None
    assert delivery.stalled == 1
    await trio.sleep(1.0)  # less than grace since the last wait: the sum goes on
    started = trio.current_time()
    await delivery.wait_for_room(slow, b"second")
    assert trio.current_time() - started == 0.5
    assert slow.ws.aborted == (SLOW_CLIENT_CLOSE_CODE, "slow client: outbox full for 2 s in total")
    assert metrics.slow_client_disconnects == 1 and delivery.stalled == 0


async def test_a_client_that_kept_up_meanwhile_starts_again_from_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room at once while the room waited for another clears the sum; so does a whole grace of quiet."""
    delivery = SlowClientDelivery(2.0, trionos.Metrics())
    member = Member("m")
    delivery._stall_times[member] = (1.9, trio.current_time())
    with trio.testing.assert_no_checkpoints():
        await delivery.wait_for_room(member, b"fits")
    assert delivery.stalled == 0
    member.transport.queued = [b"x" * 10]
    delivery._stall_times[member] = (1.9, trio.current_time() - 2.5)  # longer ago than grace
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.wait_for_room, member, b"late")
        await trio.sleep(1.0)
        member.transport.drain()
    assert member.ws.aborted is None
    delivery.forget(member)
    assert delivery.stalled == 0
