"""Cross-node history coordination: rooms whose history a shared broker keeps.

With :class:`~trionos.RedisBroker`, a room's history lives in the broker, which gives each
message its offset and delivers it to every node (this one too) in offset order. The hub then
has to reconcile two streams for a client, which this object does:

* **Sending** (:meth:`SharedHistory.broadcast`): the message is appended through the broker and
  reaches the room's members only when the broker delivers it back. For backpressure as a
  local broadcast has it, the sender waits for a slot in the room's feed, counting this node's
  broadcasts still on their way back, and holds the slot until its message is delivered here
  (at most ``grace``).
* **Joining** (:meth:`SharedHistory.recover`): the client joins at once (so this node
  subscribes to the room) but what reaches it is *held* until the broker has answered: then the
  replayed entries, and the held frames that are not among them (by offset), in that order.
  Afterwards a *floor* per (client, room) drops the messages the replay covered that are still
  on their way through the subscription (the read and the subscription are separate
  connections).

Bounds: at most :data:`MAX_HELD` frames, and ``max_held_bytes`` bytes of them (one larger frame
when none is held), are held per joining client (the rest are dropped; the client can rejoin at
its last position); one floor per (client, room) until the subscription
catches up; per room, the count of broadcasts in flight, the offset last delivered and one
event, only while a broadcast of the room is in flight.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import trio

from ._broker import Broker
from ._fanout import FEED_MAX_BYTES, Feed
from ._history import HistoryBounds, Position, Recovery
from ._metrics import Metrics

__all__ = ["MAX_HELD", "SharedHistory"]

#: At most this many frames are held for one client while its recovery is read from the broker;
#: beyond that they are dropped (the client can rejoin at its last position to get them).
MAX_HELD = 10_000

C = TypeVar("C", bound=Hashable)


class SharedHistory(Generic[C]):
    """The hub's side of the rooms whose history is in a shared broker.

    Args:
        broker: the shared broker (its ``history_append`` and ``history_recover``).
        metrics: counts history appends.
        new_epoch: makes the epoch a room's history starts with in the broker.
        grace: the most a sender waits for its own message to come back.
        max_held_bytes: the most bytes of frames held for one joining client.
    """

    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        new_epoch: Callable[[], str],
        grace: float,
        max_held_bytes: int = FEED_MAX_BYTES,
    ) -> None:
        self._broker = broker
        self._max_held_bytes = max_held_bytes
        # Bytes of the frames in ``held``, per client (for ``max_held_bytes``).
        self._held_bytes: dict[C, int] = {}
        self._metrics = metrics
        self._new_epoch = new_epoch
        self.grace = grace
        #: Clients between "joined" and "replayed", and the frames that arrived for them
        #: meanwhile, as (offset or None, frame), in arrival order. The hub checks it is empty
        #: before calling :meth:`divert` (its broadcast path).
        self.held: dict[C, list[tuple[int | None, bytes]]] = {}
        # After such a replay: the last offset it covered, per (client, room).
        self._floors: dict[tuple[C, str], int] = {}
        # Per room: this node's broadcasts published but not yet delivered back (each holds a
        # slot of the feed), the offset last delivered, and an event for senders waiting on it.
        self._in_flight: dict[str, int] = {}
        self._delivered: dict[str, int] = {}
        self._delivery: dict[str, trio.Event] = {}

    @property
    def idle(self) -> bool:
        """Whether nothing is held, floored or in flight (no bookkeeping left behind)."""
        return not (self.held or self._floors or self._in_flight or self._delivered or self._delivery)

    # --- sending ---------------------------------------------------------------------------------

    async def append(
        self,
        room: str,
        payload: str | bytes,
        *,
        exclude_id: str | None,
        exclude_identity: str | None,
        offset_member: str | None,
        bounds: HistoryBounds,
    ) -> Position:
        """Append *payload* to the room's shared history (the broker delivers it to every node).

        Raises:
            BrokerError: the broker cannot answer: the message went nowhere.
        """
        position = await self._broker.history_append(
            room,
            payload,
            exclude_id=exclude_id,
            exclude_identity=exclude_identity,
            bounds=bounds,
            offset_member=offset_member,
            epoch=self._new_epoch(),
        )
        self._metrics.history_appended += 1
        return position

    async def broadcast(
        self,
        room: str,
        payload: str | bytes,
        feed: Feed[C] | None,
        *,
        exclude_id: str | None,
        exclude_identity: str | None,
        offset_member: str | None,
        bounds: HistoryBounds,
    ) -> Position:
        """Append, with the backpressure of a local broadcast when the room has local members.

        Waits while *feed* is full (counting this node's broadcasts in flight), then appends,
        then waits (at most ``grace``) until the message is delivered back here.

        Raises:
            BrokerError: the broker cannot answer.
        """
        append = functools.partial(
            self.append,
            room,
            payload,
            exclude_id=exclude_id,
            exclude_identity=exclude_identity,
            offset_member=offset_member,
            bounds=bounds,
        )
        if feed is None:
            return await append()
        in_flight = self._in_flight
        await feed.wait_for_room(lambda: in_flight.get(room, 0) + 1)
        in_flight[room] = in_flight.get(room, 0) + 1
        try:
            position = await append()
            with trio.move_on_after(self.grace):
                while self._delivered.get(room, 0) < position.offset and not feed.stopped:
                    event = self._delivery.get(room)
                    if event is None:
                        event = self._delivery[room] = trio.Event()
                    await event.wait()
        finally:
            left = in_flight[room] - 1
            if left:
                in_flight[room] = left
            else:  # nobody waits on the room's deliveries any more
                del in_flight[room]
                self._delivered.pop(room, None)
                self._delivery.pop(room, None)
        return position

    def delivered(self, room: str, offset: int) -> None:
        """The broker delivered *room*'s message at *offset* here: wake this node's senders."""
        if room in self._in_flight:  # a sender here waits for its own message to come back
            self._delivered[room] = offset
            event = self._delivery.pop(room, None)
            if event is not None:
                event.set()

    # --- joining ---------------------------------------------------------------------------------

    async def recover(
        self,
        client: C,
        identity: str | None,
        room: str,
        *,
        since: Position | None,
        last: int | None,
        bounds: HistoryBounds,
    ) -> tuple[Recovery, list[bytes]]:
        """Read the client's replay from the broker, holding what arrives for it meanwhile.

        Call it once the client has joined the room. Cancelling it, or a failure, releases what
        was held (the caller then takes the client out of the room).

        Args:
            client: the joining client.
            identity: its identity (entries that excluded it are skipped, with *since*).
            room: the room.
            since: the client's last position (None: the latest, unless *last*).
            last: replay the room's last messages instead.
            bounds: the room's history bounds.

        Returns:
            The recovery (its position raised to the newest offset held) and the held frames
            that came after the replay, in order.

        Raises:
            BrokerError: the broker cannot answer.
        """
        held = self.held[client] = []
        try:
            if last is None:
                recovery = await self._broker.history_recover(
                    room, since, identity, bounds=bounds, epoch=self._new_epoch()
                )
            else:
                recovery = await self._broker.history_recover(
                    room, None, identity, bounds=bounds, epoch=self._new_epoch(), last=last
                )
        finally:
            del self.held[client]
            self._held_bytes.pop(client, None)
        latest = recovery.position.offset
        newest = max((offset for offset, _ in held if offset is not None), default=latest)
        self._floors[(client, room)] = max(latest, newest)
        later = [frame for offset, frame in held if offset is None or offset > latest]
        position = Position(recovery.position.epoch, max(latest, newest))
        return Recovery(position, recovery.entries, recovery.complete), later

    def divert(self, recipients: tuple[C, ...], frame: bytes, offset: int | None) -> tuple[C, ...]:
        """Hold *frame* for the recipients being replayed to (bounded); return the others."""
        held = self.held
        kept = []
        for client in recipients:
            frames = held.get(client)
            if frames is None:
                kept.append(client)
                continue
            size = self._held_bytes.get(client, 0)
            if len(frames) < MAX_HELD and (not size or size + len(frame) <= self._max_held_bytes):
                frames.append((offset, frame))
                self._held_bytes[client] = size + len(frame)
        return tuple(kept)

    def above_floor(self, room: str, recipients: tuple[C, ...], offset: int) -> tuple[C, ...]:
        """Drop *offset* for the clients whose replay covered it; a later offset ends the floor."""
        floors = self._floors
        if not floors:
            return recipients
        kept = []
        for client in recipients:
            floor = floors.get((client, room))
            if floor is None:
                kept.append(client)
            elif offset > floor:
                del floors[(client, room)]  # the subscription caught up: in order from here
                kept.append(client)
        return tuple(kept)

    def forget(self, client: C, rooms: list[str]) -> None:
        """Drop the floors of *client* (it unregistered) in *rooms*."""
        if self._floors:
            for room in rooms:
                self._floors.pop((client, room), None)
