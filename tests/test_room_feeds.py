"""The rooms' feeds on their own: fan-out tasks opened and closed, snapshots, frames that must not wait."""

from __future__ import annotations

import trio
import trio.testing

import trionos
from tests.test_delivery import Member
from trionos._delivery import SlowClientDelivery
from trionos._fanout import SlowClientPolicy
from trionos._room_feeds import RoomFeeds
from trionos._rooms import Rooms


def make(metrics: trionos.Metrics, queue_size: int = 2) -> tuple[Rooms[Member], RoomFeeds[Member]]:
    rooms: Rooms[Member] = Rooms()
    delivery = SlowClientDelivery(2.0, metrics)
    return rooms, RoomFeeds(
        rooms, delivery, metrics, policy=SlowClientPolicy.DISCONNECT, queue_size=queue_size
    )


async def test_a_room_feed_runs_a_fan_out_task_until_it_is_closed(nursery: trio.Nursery) -> None:
    """open starts one fan-out task that delivers to the snapshot; close ends it after what is queued."""
    metrics = trionos.Metrics()
    rooms, feeds = make(metrics)
    ann, bob = Member("ann", capacity=100), Member("bob", capacity=100)
    rooms.join(ann, "r")
    rooms.join(bob, "r")
    feeds.open("r", nursery)
    assert "r" in feeds and feeds.tasks == 1
    everyone = feeds.recipients("r", None)
    assert everyone == (ann, bob) and feeds.recipients("r", None) is everyone  # one snapshot, shared
    room = feeds.get("r")
    assert room is not None
    await room.put(b"hello", feeds.recipients("r", ann))
    assert feeds.close("r") and not feeds.close("r")
    await trio.testing.wait_all_tasks_blocked()
    assert bob.transport.queued == [b"hello"] and ann.transport.queued == []
    assert feeds.tasks == 0 and feeds.get("r") is None
    rooms.leave(bob, "r")
    feeds.changed("r")
    assert feeds.recipients("r", None) == (ann,)


async def test_a_frame_that_must_not_wait_is_dropped_and_counted_when_the_feed_is_full(
    nursery: trio.Nursery,
) -> None:
    """put_nowait never waits: beyond queue_size the frame is dropped and counted as a remote drop."""
    metrics = trionos.Metrics()
    rooms, feeds = make(metrics, queue_size=1)
    slow = Member("slow", capacity=1)
    slow.transport.queued = [b"stuck"]
    rooms.join(slow, "r")
    feeds.open("r", nursery)
    feeds.set_policy("r", SlowClientPolicy.DISCONNECT)
    room = feeds.get("r")
    assert room is not None
    for _ in range(5):
        feeds.put_nowait(room, b"x", (slow,))
        await trio.testing.wait_all_tasks_blocked()
    assert metrics.remote_frames_dropped >= 1
    assert not feeds.put_nowait(room, b"x", ())  # nobody to send to: nothing queued
    feeds.close("r")


async def test_the_all_clients_feed_is_made_once_and_closed_with_the_last_client(
    nursery: trio.Nursery,
) -> None:
    """broadcast_all's feed starts on first use and ends when closed; flush writes what it queued."""
    metrics = trionos.Metrics()
    _, feeds = make(metrics)
    ann = Member("ann", capacity=100)
    everyone = feeds.all_clients(nursery)
    assert feeds.all_clients(nursery) is everyone and feeds.tasks == 1
    everyone.put_nowait(b"all", (ann,))
    feeds.flush([])
    assert ann.transport.queued == [b"all"]
    feeds.close_all_clients()
    await trio.testing.wait_all_tasks_blocked()
    assert feeds.tasks == 0
