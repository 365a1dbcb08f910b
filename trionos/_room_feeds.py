"""The rooms' feeds: one per room with local members, one for ``broadcast_all``, each fanned out.

A room's *feed* (:class:`~trionos._fanout.Feed`) is its bounded memory channel of broadcasts
plus the state of the task that fans them out: one structure, one name, here and in the docs.
This object owns them for a hub: it opens a room's feed (and starts its fan-out task in the
hub's nursery) with its first local member, closes it with the last (the fan-out still delivers
what is queued), keeps each room's recipients as one shared snapshot between membership changes,
and queues frames that must not wait (from other nodes, presence) with ``put_nowait``.

Bounds: ``queue_size`` broadcasts and ``queue_bytes`` bytes per feed; a frame that must not wait
and does not fit is dropped and counted in ``remote_frames_dropped``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Generic, TypeVar

import trio

from ._delivery import Recipient, SlowClientDelivery
from ._fanout import FEED_MAX_BYTES, Feed, SlowClientPolicy
from ._metrics import Metrics
from ._rooms import Rooms

__all__ = ["RoomFeeds"]

logger = logging.getLogger("trionos.hub")

C = TypeVar("C", bound=Recipient)


class _Snapshot(Generic[C]):
    """A room's members as one tuple, shared by every broadcast until the membership changes.

    Copying a big room's members for every message would cost as much as a join; instead the
    tuple is made once per change, and a broadcast that leaves the sender out slices it (the
    position comes from ``index``, made the first time a member other than the newest is left
    out).
    """

    __slots__ = ("index", "members")

    def __init__(self, members: tuple[C, ...]) -> None:
        self.members = members
        self.index: dict[C, int] | None = None

    def without(self, client: C) -> tuple[C, ...]:
        """The members but *client*, in join order (the tuple itself when it is not a member)."""
        members = self.members
        if members and members[-1] is client:  # the newest member: its own "joined", say
            return members[:-1]
        if self.index is None:
            self.index = {member: i for i, member in enumerate(members)}
        i = self.index.get(client)
        return members if i is None else members[:i] + members[i + 1 :]


class RoomFeeds(Generic[C]):
    """The feeds of one hub's rooms and their fan-out tasks.

    Args:
        rooms: the hub's membership (who is in which room).
        delivery: writes what the feeds fan out, under the slow-client policy.
        metrics: counts remote frames dropped.
        policy: the default slow-client policy of a room.
        queue_size: the broadcasts each feed holds.
        queue_bytes: the bytes of frames each feed holds.
    """

    def __init__(
        self,
        rooms: Rooms[C],
        delivery: SlowClientDelivery,
        metrics: Metrics,
        *,
        policy: SlowClientPolicy,
        queue_size: int,
        queue_bytes: int = FEED_MAX_BYTES,
    ) -> None:
        self._rooms = rooms
        self._delivery = delivery
        self._metrics = metrics
        self.policy = policy
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        #: Fan-out tasks running now (one per room with members, and one for ``broadcast_all``).
        self.tasks = 0
        self._feeds: dict[str, Feed[C]] = {}
        self._snapshots: dict[str, _Snapshot[C]] = {}
        self._policies: dict[str, SlowClientPolicy] = {}
        self._all: Feed[C] | None = None

    def get(self, room: str) -> Feed[C] | None:
        """The room's feed, or None when it has no local member."""
        return self._feeds.get(room)

    def __contains__(self, room: str) -> bool:
        return room in self._feeds

    def open(self, room: str, nursery: trio.Nursery) -> None:
        """Make *room*'s feed and start its fan-out task in *nursery*."""
        feed = Feed[C](room, self.queue_size, self._policies.get(room, self.policy), self.queue_bytes)
        self._feeds[room] = feed
        self._start(nursery, feed)

    def close(self, room: str) -> bool:
        """Close *room*'s feed (its fan-out delivers what is queued, then ends); False if none."""
        feed = self._feeds.pop(room, None)
        if feed is None:
            return False
        feed.close()
        return True

    def changed(self, room: str) -> None:
        """*room*'s membership changed: the next broadcast takes a new snapshot."""
        self._snapshots.pop(room, None)

    def set_policy(self, room: str, policy: SlowClientPolicy) -> None:
        """Use *policy* for *room* now and whenever its feed is made again."""
        self._policies[room] = policy
        feed = self._feeds.get(room)
        if feed is not None:
            feed.policy = policy

    def recipients(self, room: str, exclude: C | None) -> tuple[C, ...]:
        """The members of *room* but *exclude*, from the room's shared snapshot."""
        snapshot = self._snapshots.get(room)
        if snapshot is None:
            snapshot = self._snapshots[room] = _Snapshot(tuple(self._rooms.member_view(room)))
        return snapshot.members if exclude is None else snapshot.without(exclude)

    def all_clients(self, nursery: trio.Nursery) -> Feed[C]:
        """The feed of ``broadcast_all``, made (and its fan-out started) when first needed."""
        if self._all is None:
            self._all = Feed[C]("*", self.queue_size, self.policy, self.queue_bytes)
            self._start(nursery, self._all)
        return self._all

    def close_all_clients(self) -> None:
        """Close the feed of ``broadcast_all`` (the last client left)."""
        if self._all is not None:
            self._all.close()
            self._all = None

    def flush(self, rooms: Iterable[str]) -> None:
        """Write what *rooms* and ``broadcast_all`` have queued, if the sockets take it now."""
        deliver_now = self._delivery.deliver_now
        for room in rooms:
            feed = self._feeds.get(room)
            if feed is not None and feed.pending:
                feed.flush(deliver_now)
        if self._all is not None and self._all.pending:
            self._all.flush(deliver_now)

    def put_nowait(self, feed: Feed[C], frame: bytes, recipients: tuple[C, ...]) -> bool:
        """Queue a frame that must not wait; drop and count it when the feed is full.

        Returns:
            Whether it was queued (False too without recipients, or once the hub stopped).
        """
        if not recipients:
            return False
        try:
            feed.put_nowait(frame, recipients)
            return True
        except trio.WouldBlock:
            self._metrics.remote_frames_dropped += 1
            dropped = self._metrics.remote_frames_dropped
            if dropped & (dropped - 1) == 0:
                logger.warning(
                    "room %r is backlogged: %d frames from other nodes dropped so far", feed.name, dropped
                )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the hub is shutting down
        return False

    def _start(self, nursery: trio.Nursery, feed: Feed[C]) -> None:
        self.tasks += 1
        delivery = self._delivery
        nursery.start_soon(feed.run, delivery.deliver_now, delivery.wait_for_room, self._ended)

    def _ended(self) -> None:
        self.tasks -= 1
