"""The hub: the rooms API over the objects that do each job.

:class:`Hub` keeps the lifetime (its nursery, its broker) and the public API: registering
clients (:mod:`._hub_client`), joining and leaving rooms, broadcasting, presence
(:mod:`._presence`) and history (:mod:`._hub_history`, :mod:`._shared_history`). The rooms'
feeds and their fan-out tasks are :mod:`._room_feeds`'s, and writing to slow clients is
:mod:`._delivery`'s. A room's *feed* (:class:`._fanout.Feed`) is its bounded memory channel of
broadcasts plus the state of the task that fans them out: one structure, one name, here and in
the docs.

Broadcast path: ``broadcast()`` encodes the message into one WebSocket frame, snapshots the
room's recipients and puts both on the room's feed (waiting when it is full: that is how a fast
sender feels a backlog). The room's fan-out task (:mod:`._fanout`) gathers
what is queued, joins consecutive frames for the same recipients, and writes the same bytes to
every recipient's socket without awaiting. Only a recipient whose socket buffer is full falls
back to its bounded outbox, drained by a writer task that exists while the backlog does. The
slow-client policy decides what happens when that outbox is full too. A direct write on a
registered connection first flushes its rooms, so program order holds per connection.

Across processes: a hub takes a broker (``Hub(broker=...)``, see :mod:`trionos._broker`). With
the default :class:`~trionos.LocalBroker` the hub is alone and the path above is all there is.
With a shared broker (:class:`~trionos.RedisBroker`) a broadcast also hands one envelope (origin
node, excluded client id, the same frame bytes) to the broker, which never blocks; local members
still get the frame directly. Frames from other nodes enter the room's feed with
``send_nowait`` (the broker's reader never waits on a room: a frame that does not fit is dropped
and counted in ``remote_frames_dropped``) and go through the same fan-out. Joins and leaves are
reported to the broker, which keeps the cluster-wide presence that :meth:`Hub.presence` merges.
"""

from __future__ import annotations

import logging
import math
import secrets
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Any, Self

import trio

from ._broker import (
    Broker,
    Member,
    PresenceDiff,
    encode_envelope,
    merge_members,
    merge_presence,
    single_start_error,
)
from ._connection import MessageCodec
from ._delivery import SlowClientDelivery
from ._fanout import FEED_MAX_BYTES, Feed, SlowClientPolicy
from ._frames import message_frame
from ._history import HistoryBounds, Position, Recovery
from ._hub_client import AnyClient, C, Client, ClientRegistry, Sent
from ._hub_history import HubHistory
from ._local_broker import LocalBroker
from ._metrics import Metrics
from ._presence import PresenceBook, PresenceWatcher
from ._ratelimit import RateLimit, RateVerdict
from ._room_feeds import RoomFeeds
from ._rooms import Rooms
from ._shared_history import SharedHistory

__all__ = ["Hub", "SlowClientPolicy"]

logger = logging.getLogger("trionos.hub")

#: The close code sent to a client that kept sending over its rate limit (policy violation).
RATE_LIMIT_CLOSE_CODE = 1008
#: The default seconds between two sweeps of the in-memory histories (``history_sweep_interval``).
HISTORY_SWEEP_INTERVAL = 30.0


def _seconds(name: str, value: object) -> float:
    """*value* as a hub setting that is a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Hub {name} must be a number of seconds, got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"Hub {name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def _grace(value: object) -> float:
    """*value* as the hub's ``grace``: a positive, finite number of seconds."""
    return _seconds("grace", value)


def _at_least_1(name: str, value: object) -> int:
    """*value* as a hub setting that is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Hub {name} must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"Hub {name} must be at least 1, got {value!r}")
    return value


def _policy(value: SlowClientPolicy | str) -> SlowClientPolicy:
    """The policy *value* names (raises ValueError for an unknown name)."""
    return value if isinstance(value, SlowClientPolicy) else SlowClientPolicy(value)


class Hub:
    """Clients, rooms and broadcast for one server process.

    Use it as ``async with trionos.Hub() as hub:`` (it owns a nursery for the rooms' fan-out
    tasks) or start it in a nursery you own with ``hub = await nursery.start(Hub().run)``.

    Bounds: each room's feed holds ``room_queue_size`` pending broadcasts and
    ``room_queue_bytes`` bytes of them (:meth:`broadcast` waits beyond either); each client's
    outbox holds the ``max_outbox_bytes`` given to :func:`~trionos.serve`, and ``policy`` says
    what happens beyond that; a replay that does not fit waits in the client's backlog (see
    :meth:`join_with_history`). The Bounds and Design pages of the documentation follow the
    whole path.

    With a shared broker, rooms span every node: a broadcast reaches members everywhere and
    :meth:`presence` lists them all. With history, a broadcast gets a
    :class:`~trionos.Position` (``broadcast(...).position``) and :meth:`join_with_history` joins
    a client at a position, replaying what it missed.

    Stopping (leaving the ``async with`` block, or cancelling :meth:`run`) ends the fan-out
    tasks. What is queued then is written if the sockets take it without waiting; broadcasts
    made after that (the goodbyes of handlers that a server shutdown is cancelling, say) are
    dropped quietly and return 0, so the server still closes every client with 1001.

    Args:
        policy: what the fan-out does when a client's outbox is full (a
            :class:`~trionos.SlowClientPolicy` or its value); :meth:`set_room_policy` overrides
            it per room.
        grace: the seconds in total a room waits for one slow client under the ``disconnect``
            policy before closing it with 1008.
        room_queue_size: the broadcasts each room's feed holds before :meth:`broadcast` waits.
        room_queue_bytes: the bytes of frames each room's feed holds before :meth:`broadcast`
            waits (4 MiB; one larger frame fits an empty feed), and the most bytes that may queue
            behind a client's replay (:meth:`join_with_history`) before it is closed with 1008.
        codec: the default codec for broadcasts of messages that are not ``str``/``bytes``.
        broker: connects this hub to hubs in other processes (default: a private
            :class:`~trionos.LocalBroker`, i.e. none). Starting the hub starts the broker.
        on_member_expired: awaited (on one node of the cluster) for each member of a node that
            died, so the application can announce it; exceptions it raises are logged and
            dropped.
        rate_limit: the per-client message rate that :meth:`admit` applies to inbound
            messages (default None: no limit).
        history: a bounded history in every room (``True`` for the default
            :class:`~trionos.HistoryBounds`, or bounds of your own; None: none);
            :meth:`set_room_history` turns it on or off per room.
        offset_field: the member a codec-encoded message (a JSON object) into a room with
            history carries its offset in (None: not stamped).
        epoch_field: the member such a message carries its epoch in, before the offset (None,
            the default: not stamped). With it, a live client sees at once that a room's history
            restarted (eviction, a Redis restart), where offsets alone start again from 1.
        new_epoch: makes the epoch each room's history starts with (default: 8 random hex
            digits from :mod:`secrets`, so a restarted process names new epochs).
        metrics: the :class:`~trionos.Metrics` this hub counts into (a fresh one by default;
            pass the server's to see both in one place): broadcast messages and bytes out,
            frames dropped, slow-client disconnects, rate-limit refusals, remote frames dropped,
            and history appends, trims, replays and recoveries.
        max_presence_meta_bytes: the largest presence metadata a member may have (:meth:`join`,
            :meth:`update_presence`), in bytes of compact UTF-8 JSON.
        history_sweep_interval: the seconds between two sweeps of the in-memory histories (30):
            each sweep drops the messages older than ``max_age`` in rooms nobody reads and
            forgets the empty histories of rooms without members. Unused with a shared broker
            (Redis expires its keys itself).

    Raises:
        TypeError: *grace*, *history_sweep_interval*, *room_queue_size*, *room_queue_bytes* or
            *max_presence_meta_bytes* is not a number (whole, for the last three).
        ValueError: *grace* or *history_sweep_interval* is not positive and finite,
            *room_queue_size*, *room_queue_bytes* or *max_presence_meta_bytes* is below 1, or
            *policy* names no policy.
        BrokerError: on entering (or from :meth:`run`, before ``started``), a shared broker
            cannot connect.
    """

    def __init__(
        self,
        *,
        policy: SlowClientPolicy | str = SlowClientPolicy.DISCONNECT,
        grace: float = 2.0,
        room_queue_size: int = 64,
        room_queue_bytes: int = FEED_MAX_BYTES,
        codec: MessageCodec[Any] | None = None,
        broker: Broker | None = None,
        on_member_expired: Callable[[Member], Awaitable[None]] | None = None,
        rate_limit: RateLimit | None = None,
        history: HistoryBounds | bool | None = None,
        offset_field: str | None = "offset",
        epoch_field: str | None = None,
        new_epoch: Callable[[], str] | None = None,
        metrics: Metrics | None = None,
        max_presence_meta_bytes: int = 1024,
        history_sweep_interval: float = HISTORY_SWEEP_INTERVAL,
    ) -> None:
        grace = _grace(grace)
        self._sweep_interval = _seconds("history_sweep_interval", history_sweep_interval)
        room_queue_size = _at_least_1("room_queue_size", room_queue_size)
        room_queue_bytes = _at_least_1("room_queue_bytes", room_queue_bytes)
        max_presence_meta_bytes = _at_least_1("max_presence_meta_bytes", max_presence_meta_bytes)
        #: The broker this hub reports to (a private :class:`~trionos.LocalBroker` by default).
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.on_member_expired = on_member_expired
        # Checked on every broadcast, join and leave: False keeps the single-process path as it was.
        self._shared = self.broker.shared
        self._node_id = self.broker.node_id
        self.codec = codec
        self._rooms: Rooms[AnyClient] = Rooms()
        self._clients = ClientRegistry(
            check_running=self._require_nursery, flush=self._flush_rooms_of, left=self._left
        )
        self._nursery: trio.Nursery | None = None
        #: The per-client message rate limit that :meth:`admit` applies (None: no limit).
        self.rate_limit = rate_limit
        #: The counters this hub increments (share one :class:`~trionos.Metrics` with the server).
        self.metrics = metrics if metrics is not None else Metrics()
        self._delivery = SlowClientDelivery(grace, self.metrics, room_queue_bytes)
        self._feeds = RoomFeeds[AnyClient](
            self._rooms,
            self._delivery,
            self.metrics,
            policy=_policy(policy),
            queue_size=room_queue_size,
            queue_bytes=room_queue_bytes,
        )
        self._stopped = False
        self._cm: AbstractAsyncContextManager[Hub, bool | None] | None = None
        new_epoch = new_epoch or (lambda: secrets.token_hex(4))
        self._history = HubHistory(history, offset_field, new_epoch, self.metrics, epoch_field)
        self._shared_history = SharedHistory[AnyClient](
            self.broker, self.metrics, new_epoch, grace, room_queue_bytes
        )
        # The clients being replayed to from a shared history (checked on every broadcast).
        self._held = self._shared_history.held
        self._presence = PresenceBook(self.broker, max_presence_meta_bytes)

    # --- lifetime ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This hub's node id (its broker's)."""
        return self._node_id

    @property
    def policy(self) -> SlowClientPolicy:
        """The slow-client policy of rooms without one of their own (:meth:`set_room_policy`)."""
        return self._feeds.policy

    @property
    def room_queue_size(self) -> int:
        """The broadcasts each room's feed holds before :meth:`broadcast` waits."""
        return self._feeds.queue_size

    @property
    def room_queue_bytes(self) -> int:
        """The bytes of frames each room's feed holds before :meth:`broadcast` waits."""
        return self._feeds.queue_bytes

    @property
    def history_sweep_interval(self) -> float:
        """The seconds between two sweeps of the in-memory histories."""
        return self._sweep_interval

    @property
    def grace(self) -> float:
        """The seconds in total a room waits for one slow client (settable)."""
        return self._delivery.grace

    @grace.setter
    def grace(self, value: float) -> None:
        self._delivery.grace = self._shared_history.grace = _grace(value)

    @property
    def offset_field(self) -> str | None:
        """The member a codec-encoded message into a room with history carries its offset in."""
        return self._history.offset_field

    @property
    def epoch_field(self) -> str | None:
        """The member a codec-encoded message into a room with history carries its epoch in."""
        return self._history.epoch_field

    @property
    def fan_out_tasks(self) -> int:
        """Fan-out tasks running now (one per room with members, and one for ``broadcast_all``)."""
        return self._feeds.tasks

    @property
    def slow_clients_dropped(self) -> int:
        """Clients closed by the ``disconnect`` policy (``metrics.slow_client_disconnects``)."""
        return self.metrics.slow_client_disconnects

    @property
    def remote_frames_dropped(self) -> int:
        """Frames from other nodes dropped because a room's feed was full (``metrics``)."""
        return self.metrics.remote_frames_dropped

    async def run(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's fan-out tasks (and its broker) until cancelled.

        The ``nursery.start`` convention: ``hub = await nursery.start(Hub().run)``. Cancelling it
        stops the hub as leaving ``async with`` does.

        Args:
            task_status: given the hub once its broker is connected.

        Raises:
            BrokerError: before ``started``, a shared broker cannot connect.
        """
        async with self._open():
            task_status.started(self)
            await trio.sleep_forever()

    async def __aenter__(self) -> Self:
        cm = self._open()
        await cm.__aenter__()
        self._cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> bool | None:
        cm, self._cm = self._cm, None
        if cm is None:
            raise RuntimeError("the hub was not entered: use `async with Hub()`")
        return await cm.__aexit__(exc_type, exc_value, traceback)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Self]:
        started = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._start_broker(nursery)
                    if not self._shared:
                        nursery.start_soon(self._sweep_histories)
                    started = True
                    yield self
                finally:
                    self._nursery = None
                    self._stopped = True
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only a start-up failure is unwrapped: what the body raises stays as it was.
            if not started and (error := single_start_error(group)) is not None:
                raise error from None
            raise

    async def _start_broker(self, nursery: trio.Nursery) -> None:
        if self._shared:
            await nursery.start(self.broker.run, self)

    async def _sweep_histories(self) -> None:
        """Every ``history_sweep_interval`` s: age out the in-memory histories, forget idle empty ones."""
        while True:
            await trio.sleep(self._sweep_interval)
            self._history.sweep(trio.current_time(), lambda room: bool(self._rooms.member_view(room)))

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the hub is not running: use `async with Hub()` or `nursery.start(hub.run)`")
        return self._nursery

    # --- registry ----------------------------------------------------------------------------

    def client(
        self,
        ws: C,
        *,
        client_id: str | None = None,
        name: str | None = None,
        identity: str | None = None,
    ) -> Client[C]:
        """The client for *ws*, to register for an ``async with`` block.

        ``async with hub.client(ws) as client:`` registers it; on exit, whatever the cause
        (normal close, abrupt disconnect, heartbeat timeout, cancellation), the client leaves
        every room at once, without awaiting, after what its rooms had queued for it is written
        if its socket takes it.

        Args:
            ws: the client's connection: a :class:`~trionos.WebSocket`, a bridged trio-websocket
                connection, or anything that implements :class:`~trionos.HubConnection`.
            client_id: its id (default: the connection's id); entering raises when it is taken.
            name: the application's label for it, listed by :meth:`presence`.
            identity: who it is across reconnections, for the rooms' history (default: the id;
                see :class:`~trionos.Client`).

        Returns:
            The :class:`~trionos.Client`, not yet registered.

        Raises:
            ValueError: on entering, another registered client has the same id.
            RuntimeError: on entering, the hub is not running, or this client is registered
                already.
        """
        return Client(self, self._clients, ws, client_id or ws.id, name, identity)

    def _left(self, client: AnyClient) -> None:
        """*client* unregistered: it leaves every room at once."""
        self._delivery.forget(client)
        self._shared_history.forget(client, self._rooms.rooms_of(client))
        for room in self._rooms.drop(client):
            self._feeds.changed(room)
            self._presence.left(room, client.id, client.name)
            self._room_emptied_check(room)
        if not len(self._clients):
            self._feeds.close_all_clients()

    def _flush_rooms_of(self, client: AnyClient) -> None:
        self._delivery.pump(client)  # a replay's rest first, as far as the transport takes it
        self._feeds.flush(self._rooms.rooms_view(client))

    @property
    def clients(self) -> Mapping[str, AnyClient]:
        """Registered clients by id: a live, read-only view (a :class:`types.MappingProxyType`).

        It follows registrations as they happen and cannot be changed through (register with
        :meth:`client`). Take ``dict(hub.clients)`` for a snapshot to keep across an ``await``:
        iterating the view while a client registers or leaves raises :class:`RuntimeError`.
        """
        return self._clients.view

    def get(self, client_id: str) -> AnyClient | None:
        """The registered client with this id.

        Args:
            client_id: the id it registered with.

        Returns:
            The :class:`~trionos.Client`, or None when none is registered with that id.
        """
        return self._clients.get(client_id)

    # --- rooms -------------------------------------------------------------------------------

    def set_room_policy(self, room: str, policy: SlowClientPolicy | str) -> None:
        """Use *policy* for *room* instead of the hub's default (now, and whenever it is created).

        Args:
            room: the room's name.
            policy: a :class:`~trionos.SlowClientPolicy` or its value (``"drop_oldest"``).

        Raises:
            ValueError: *policy* names no policy.
        """
        self._feeds.set_policy(room, _policy(policy))

    def set_room_history(self, room: str, history: HistoryBounds | bool | None) -> None:
        """Keep a history in *room* with these bounds, or none, overriding the hub's ``history``.

        Turning it off drops what the room kept. The number of rooms with a history is bounded by
        ``max_rooms`` (see :class:`~trionos.HistoryBounds`).

        Args:
            room: the room's name.
            history: the bounds (``True``: the defaults), or None or False for no history.

        Raises:
            TypeError: *history* is none of those.
        """
        self._history.set(room, history)

    def history_bounds(self, room: str) -> HistoryBounds | None:
        """The bounds of *room*'s history.

        Args:
            room: the room's name.

        Returns:
            The :class:`~trionos.HistoryBounds`, or None when the room keeps no history.
        """
        return self._history.bounds(room)

    def position(self, room: str) -> Position | None:
        """The latest position in *room*'s history.

        Args:
            room: the room's name.

        Returns:
            The :class:`~trionos.Position` of its last message (offset 0 before the first), or
            None when the room keeps no history.
        """
        return self._history.position(room)

    def join(self, client: AnyClient, room: str, *, meta: Mapping[str, Any] | None = None) -> bool:
        """Add *client* to *room*, creating the room (and its fan-out task) if needed. Never awaits.

        With a shared broker, the membership is registered cluster-wide in the background (under
        the client's current name, with *meta*); :meth:`presence` waits for that. A new member
        is reported to the presence watchers (:meth:`watch_presence`) at once, as a join, and
        through the broker to the other nodes' watchers.

        Args:
            client: a client registered with this hub.
            room: the room's name.
            meta: the member's presence metadata: a mapping of JSON values, at most
                ``max_presence_meta_bytes`` of JSON (ignored when it is a member already: see
                :meth:`update_presence`).

        Returns:
            True if it was not a member already.

        Raises:
            ValueError: *client* is not registered with this hub, or *meta* is too large.
            TypeError: *meta* is not a mapping.
            EncodeError: *meta* holds something JSON cannot.
            RuntimeError: the hub is not running.
        """
        if self._clients.get(client.id) is not client:
            raise ValueError(f"{client!r} is not registered with this hub")
        checked = self._presence.check(meta)
        if room not in self._feeds:
            self._feeds.open(room, self._require_nursery())
            if self._shared:
                self.broker.open_room(room)
        joined = self._rooms.join(client, room)
        if joined:
            self._feeds.changed(room)
            self._presence.joined(room, client.id, client.name, checked)
        return joined

    def update_presence(self, client: AnyClient, room: str, meta: Mapping[str, Any] | None) -> None:
        """Replace *client*'s presence metadata in *room*; watchers everywhere get an update. Never awaits.

        Args:
            client: a member of *room* on this hub.
            room: the room's name.
            meta: the new metadata (None: none), bounded as in :meth:`join`.

        Raises:
            ValueError: *client* is not a member of *room*, or *meta* is too large.
            TypeError: *meta* is not a mapping.
            EncodeError: *meta* holds something JSON cannot.
        """
        checked = self._presence.check(meta)
        if room not in self._rooms.rooms_view(client):
            raise ValueError(f"{client!r} is not a member of room {room!r}")
        self._presence.updated(room, client.id, client.name, checked)

    async def join_with_history(
        self,
        client: AnyClient,
        room: str,
        *,
        since: Position | None = None,
        last: int | None = None,
        welcome: Callable[[Recovery], Any] | None = None,
        codec: MessageCodec[Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Recovery:
        """Join *client* to *room* at a position: the welcome, what it missed, then live messages.

        Or, with *last*, a fresh view: the welcome, the room's last *last* messages (oldest first,
        every one of them: a fresh view has not seen its own either), then live messages, with
        the same seam.

        In one step with no checkpoint (nothing else runs in between): the room's history is read,
        the client joins, and the message ``welcome(recovery)`` (if given; encoded like a
        broadcast) followed by every missed frame goes to the client, ahead of any broadcast
        made after the join. The seam has no gap and no duplicate: a broadcast made before the
        join is in the history (replayed), one made after it is delivered live. Recoveries are
        counted in ``recoveries_complete``/``recoveries_partial``. The Recovery page of the
        documentation shows the client's side.

        The replay never goes through the room's feed, so it never makes the room or its other
        members wait: what the client's socket and outbox take now is written now, in pieces of
        at most 64 KiB. The rest, under the room's ``disconnect`` policy, waits in the client's
        backlog and is written as the client reads, with what the hub fans out to it meanwhile
        queued behind it (at most ``room_queue_bytes``); a client that makes its replay wait
        ``grace`` in total, or falls further behind, is closed with 1008 like any slow client.
        Under ``drop_oldest`` the whole replay is written at once, dropping the oldest queued
        frames as a live broadcast does. Bytes waiting in backlogs are counted in
        ``metrics.backlog_bytes_open``.

        Never waits in memory; with a shared broker, waits for the broker's answer, and if
        cancelled then, the client is taken out of the room again.

        Args:
            client: a client registered with this hub.
            room: the room's name; it must keep a history.
            since: the last position the client saw; None joins at the room's latest position
                (nothing is replayed).
            last: instead of *since*: how many of the room's last messages to replay (at most
                the history's ``max_messages``; 0 replays nothing). Counted in
                ``messages_replayed``, not as a recovery.
            welcome: makes the first message the client gets from the recovery.
            codec: encodes the welcome when it is not ``str``/``bytes`` (default: the hub's).
            meta: the member's presence metadata, as in :meth:`join`.

        Returns:
            The :class:`~trionos.Recovery` (also given to *welcome*): the room's latest
            position, the replayed entries (messages that excluded this client's ``identity``
            are skipped) and whether the recovery is complete.

        Raises:
            ValueError: the room keeps no history, the client is not registered, *since* and
                *last* are both given, *last* is negative, or *meta* is too large.
            BrokerError: a shared broker cannot answer.
        """
        bounds = self.history_bounds(room)
        if bounds is None:
            raise ValueError(f"room {room!r} keeps no history: pass Hub(history=...) or set_room_history()")
        if self._clients.get(client.id) is not client:
            raise ValueError(f"{client!r} is not registered with this hub")
        if last is not None:
            if since is not None:
                raise ValueError(f"pass since or last, not both: got since={since!r}, last={last!r}")
            if isinstance(last, bool) or not isinstance(last, int) or last < 0:
                raise ValueError(f"last must be an integer of at least 0, got {last!r}")
            last = min(last, bounds.max_messages)
        later: list[bytes] = []
        joined: bool | None = None
        if self._shared:
            # The client joins first (this node subscribes); what reaches it is held meanwhile.
            joined = self.join(client, room, meta=meta)
            try:
                recovery, later = await self._shared_history.recover(
                    client, client.identity, room, since=since, last=last, bounds=bounds
                )
            except BaseException:
                if joined:
                    self.leave(client, room)
                raise
        else:  # read and join with no checkpoint in between
            recovery = self._history.read(
                room, bounds, since=since, last=last, identity=client.identity, now=trio.current_time()
            )
        self._history.count(recovery, since)
        frames = [e.frame for e in recovery.entries]
        if welcome is not None:
            frames.insert(0, self.encode(welcome(recovery), codec))
        if joined is None:
            joined = self.join(client, room, meta=meta)
        feed, nursery = self._feeds.get(room), self._nursery
        if feed is not None and nursery is not None and (frames or later):  # (else: the hub stopped)
            self._delivery.replay(client, frames + later, feed.policy, nursery)
        return recovery

    def leave(self, client: AnyClient, room: str) -> bool:
        """Remove *client* from *room*; an empty room disappears (its fan-out ends). Never awaits.

        Args:
            client: the client.
            room: the room's name.

        Returns:
            True if it was a member.
        """
        left = self._rooms.leave(client, room)
        if left:
            self._feeds.changed(room)
            self._presence.left(room, client.id, client.name)
            self._room_emptied_check(room)
        return left

    def members(self, room: str) -> list[AnyClient]:
        """The local members of *room*.

        Args:
            room: the room's name.

        Returns:
            A new list of its :class:`~trionos.Client` objects, in join order.
        """
        return self._rooms.members(room)

    async def presence_state(self, room: str) -> list[Member]:
        """The members of *room* with their metadata, in join order (Phoenix's ``Presence.list``).

        Unlike :meth:`presence`, members without a name are listed too. With a shared broker:
        the members on every node, as :meth:`presence` reads them (this node's with their
        current name and metadata; the others' as their node registered them).

        Args:
            room: the room's name.

        Returns:
            A new list of :class:`~trionos.Member` records (``seq`` is 0 without a shared broker).
        """
        local = [self._presence.member(room, c.id, c.name) for c in self._rooms.member_view(room)]
        if not self._shared:
            await trio.lowlevel.checkpoint()
            return local
        return merge_members(self._node_id, local, await self.broker.presence(room))

    def watch_presence(self, watcher: PresenceWatcher) -> AbstractContextManager[None]:
        """Call *watcher* with every presence change while the ``with`` block runs.

        ``with hub.watch_presence(on_diff):``. *watcher* gets a :class:`~trionos.PresenceDiff`
        for each join, leave and metadata update made on this node (synchronously, inside
        :meth:`join`, :meth:`leave` and the like, after the change) and, with a shared broker,
        for those made on other nodes in the rooms this node has members in, including the
        leaves of members of a node that died. It must not await or block; what it raises is
        logged and dropped. To tell this node's members, it can call
        :meth:`broadcast_local_nowait`.

        Args:
            watcher: called with each diff.

        Returns:
            A context manager: the watcher is called from entering until leaving it.
        """
        return self._presence.watch(watcher)

    def broadcast_local_nowait(
        self,
        room: str,
        message: Any,
        *,
        exclude: AnyClient | None = None,
        codec: MessageCodec[Any] | None = None,
    ) -> int:
        """Send *message* to this node's members of *room* but *exclude*, without waiting.

        For what every node sends its own members (a presence diff each node received, say): it
        is not published to other nodes and not kept in history. The frame joins the room's feed
        without waiting: when the feed is full it is dropped and counted in
        ``remote_frames_dropped``, as a frame from another node is.

        Args:
            room: the room's name.
            message: ``str``, ``bytes`` or anything the codec encodes.
            exclude: a member that does not receive it.
            codec: the codec for this message (default: the hub's).

        Returns:
            The number of recipients it was queued for (0 when it was dropped, or the room has
            no local member).

        Raises:
            TypeError: *message* needs a codec and there is none.
            EncodeError: the codec cannot encode *message*.
        """
        frame = self.encode(message, codec)
        feed = self._feeds.get(room)
        if feed is None or self._stopped:
            return 0
        recipients = self._feeds.recipients(room, exclude)
        if self._held:
            recipients = self._shared_history.divert(recipients, frame, None)
        return len(recipients) if self._feeds.put_nowait(feed, frame, recipients) else 0

    async def presence(self, room: str) -> list[str]:
        """The names of the members of *room*, in join order (clients without a name are skipped).

        With a shared broker: the members on every node, ordered by when they joined, once this
        node's own joins and leaves are registered (bounded by the broker's operation timeout).
        When the broker cannot answer, the local members only. Cancelling it loses nothing.

        Args:
            room: the room's name.

        Returns:
            The names.
        """
        if not self._shared:
            await trio.lowlevel.checkpoint()
            return [c.name for c in self._rooms.member_view(room) if c.name is not None]
        registry = await self.broker.presence(room)
        local = [(c.id, c.name) for c in self._rooms.member_view(room)]
        return merge_presence(self._node_id, local, registry)

    def admit(self, client: AnyClient) -> bool:
        """Count one inbound message from *client* against the hub's ``rate_limit``. Never awaits.

        Call it for every message the client sends, before acting on it. Over the limit the
        answer is False (counted in ``metrics.rate_limited``): do not act on the message, answer
        it with an error instead. Once ``rate_limit.close_after`` messages in a row were refused
        (the client kept sending regardless), the hub also closes the connection with 1008 and a
        reason that says so; ``client.ws.closed`` is then True and the handler should stop
        reading.

        Args:
            client: the client that sent the message.

        Returns:
            True to handle the message (always, without a ``rate_limit``).
        """
        limit = self.rate_limit
        if limit is None:
            return True
        now = trio.current_time()
        bucket = client.bucket
        if bucket is None:
            bucket = client.bucket = limit.bucket(now)
        verdict = bucket.take(now)
        if verdict is RateVerdict.ACCEPT:
            return True
        self.metrics.rate_limited += 1
        if verdict is RateVerdict.CLOSE:
            reason = f"rate limit: over {limit.rate:g} messages/s, {limit.close_after} refused in a row"
            logger.info("closing %r: %s", client, reason)
            client.ws.abort(RATE_LIMIT_CLOSE_CODE, reason)
        return False

    def rooms(self) -> list[str]:
        """The rooms that have local members.

        Returns:
            Their names, in the order they were created.
        """
        return self._rooms.rooms()

    def rooms_of(self, client: AnyClient) -> list[str]:
        """The rooms *client* is in.

        Args:
            client: the client.

        Returns:
            Their names, in the order it joined them.
        """
        return self._rooms.rooms_of(client)

    def _room_emptied_check(self, room: str) -> None:
        # Closing the feed is how the fan-out task learns it is done; it still delivers what is
        # already queued to the recipients snapshotted at broadcast time.
        if not self._rooms.member_view(room) and self._feeds.close(room):
            if self._shared:
                self.broker.close_room(room)

    # --- broadcast ---------------------------------------------------------------------------

    def encode(self, message: Any, codec: MessageCodec[Any] | None = None) -> bytes:
        """Encode *message* once into a WebSocket frame, as :meth:`broadcast` does.

        Args:
            message: ``str`` (a text frame), ``bytes`` (a binary frame) or anything the codec
                encodes.
            codec: the codec to use (default: the hub's).

        Returns:
            The frame's bytes.

        Raises:
            TypeError: *message* needs a codec and there is none.
            EncodeError: the codec cannot encode *message*.
        """
        if isinstance(message, str | bytes):
            return message_frame(message)
        return message_frame(self._codec_for(message, codec).encode(message))

    def _codec_for(self, message: Any, codec: MessageCodec[Any] | None) -> MessageCodec[Any]:
        codec = codec or self.codec
        if codec is None:
            raise TypeError(
                f"cannot broadcast a {type(message).__name__} without a codec: pass codec= or Hub(codec=...)"
            )
        return codec

    async def broadcast(
        self,
        room: str,
        message: Any,
        *,
        exclude: AnyClient | None = None,
        codec: MessageCodec[Any] | None = None,
        history: bool = True,
    ) -> Sent:
        """Send *message* to every member of *room* but *exclude*.

        The message is encoded once. Recipients are the members at the time of the call. Waits
        while the room's feed is full (``room_queue_size``). Per sender, messages reach each
        recipient in order. With a shared broker the message also goes to the room's members on
        other nodes (handed to the broker without waiting).

        In a room with history the message first gets the room's next
        :class:`~trionos.Position` (stamped into it as ``offset_field``) and is kept,
        remembering *exclude*'s identity. In memory, appending happens before any wait, so a
        message is in the history from the moment ``broadcast`` is called. When the history is
        in a shared broker, the broadcast first waits for a slot in the room's feed (counting
        this node's broadcasts still on their way back), then appends, then holds the slot until
        its message is delivered here (at most ``grace``): the sender is slowed to the room's
        pace, as in memory, instead of its messages being dropped.

        Once the hub has stopped, the message is dropped and 0 returned (no error), so a goodbye
        broadcast from a handler's ``finally`` during a shutdown needs no special case.

        Args:
            room: the room's name.
            message: ``str``, ``bytes`` or anything the codec encodes.
            exclude: a member that does not receive it (usually the sender).
            codec: the codec for this message (default: the hub's).
            history: False sends a transient message (presence, typing...): not kept, no
                position.

        Returns:
            A :class:`~trionos.Sent`: the number of local recipients, with the message's
            ``position`` (None without history).

        Raises:
            TypeError: *message* needs a codec and there is none.
            EncodeError: the codec cannot encode *message*.
            BrokerError: the room's history is in a shared broker that cannot answer.
        """
        bounds = self._history.bounds(room) if history else None
        if bounds is None:
            frame = self.encode(message, codec)
            position = None
        else:
            if not isinstance(message, str | bytes):
                codec = self._codec_for(message, codec)
            if self._shared:
                return await self._broadcast_shared(room, message, exclude, codec, bounds)
            identity = None if exclude is None else exclude.identity
            frame, position = self._history.append(
                room, bounds, message, codec, identity, trio.current_time()
            )
        if self._shared:
            exclude_id = None if exclude is None else exclude.id
            self.broker.publish(room, encode_envelope(self._node_id, exclude_id, frame))
        feed = self._feeds.get(room)
        if feed is None:
            return Sent(0, position)
        recipients = self._feeds.recipients(room, exclude)
        count = len(recipients)
        if self._held:
            recipients = self._shared_history.divert(recipients, frame, None)
        if recipients and not await feed.put(frame, recipients):
            return Sent(0, position)  # the hub has stopped: dropped quietly
        return Sent(count, position)

    async def _broadcast_shared(
        self,
        room: str,
        message: Any,
        exclude: AnyClient | None,
        codec: MessageCodec[Any] | None,
        bounds: HistoryBounds,
    ) -> Sent:
        """A broadcast into a room whose history is in the broker: the broker assigns the offset
        and delivers it to every node, this one included (:meth:`deliver_history`)."""
        payload, member = self._history.payload(message, codec)
        position = await self._shared_history.broadcast(
            room,
            payload,
            self._feeds.get(room),
            exclude_id=None if exclude is None else exclude.id,
            exclude_identity=None if exclude is None else exclude.identity,
            offset_member=member,
            bounds=bounds,
        )
        count = sum(1 for c in self._rooms.member_view(room) if c is not exclude)
        return Sent(count, position)

    async def broadcast_all(
        self, message: Any, *, exclude: AnyClient | None = None, codec: MessageCodec[Any] | None = None
    ) -> int:
        """Send *message* to every registered client but *exclude*.

        With a shared broker, to every client of every node. Waits while the hub-wide feed is
        full. Once the hub has stopped, the message is dropped and 0 returned.

        Args:
            message: ``str``, ``bytes`` or anything the codec encodes.
            exclude: a client that does not receive it.
            codec: the codec for this message (default: the hub's).

        Returns:
            The number of local recipients.

        Raises:
            TypeError: *message* needs a codec and there is none.
            EncodeError: the codec cannot encode *message*.
        """
        frame = self.encode(message, codec)
        if self._shared:
            exclude_id = None if exclude is None else exclude.id
            self.broker.publish(None, encode_envelope(self._node_id, exclude_id, frame))
        if self._stopped:
            await trio.lowlevel.checkpoint()
            return 0
        all_feed = self._feeds.all_clients(self._require_nursery())
        recipients = tuple(c for c in self._clients.view.values() if c is not exclude)
        if recipients and await all_feed.put(frame, recipients):
            return len(recipients)
        return 0

    # --- what the broker calls (BrokerSink) --------------------------------------------------

    def deliver_remote(self, room: str | None, frame: bytes, exclude: str | None) -> None:
        """Deliver a frame another node published to the local members of *room*.

        Never waits: the frame joins the room's feed with ``put_nowait`` and goes through the
        same fan-out as a local broadcast. When the feed is full the frame is dropped and
        counted in ``remote_frames_dropped`` (the broker's reader serves every room, so it must
        not wait on one).

        Args:
            room: the room's name, or None for every client.
            frame: the encoded WebSocket frame.
            exclude: the id of a client that does not receive it.
        """
        feed: Feed[AnyClient] | None
        if room is None:
            if not len(self._clients) or self._nursery is None:
                return
            feed = self._feeds.all_clients(self._nursery)
            recipients = tuple(c for c in self._clients.view.values() if c.id != exclude)
        else:
            feed = self._feeds.get(room)
            if feed is None:
                return
            recipients = self._feeds.recipients(room, None if exclude is None else self._clients.get(exclude))
        if self._held:
            recipients = self._shared_history.divert(recipients, frame, None)
        self._feeds.put_nowait(feed, frame, recipients)

    def _members_but(self, room: str, exclude: str | None) -> tuple[AnyClient, ...]:
        """The local members of ``room`` but the client with id ``exclude``."""
        view = self._rooms.member_view(room)
        return tuple(view) if exclude is None else tuple(c for c in view if c.id != exclude)

    def deliver_history(self, room: str, frame: bytes, exclude: str | None, offset: int) -> None:
        """Deliver a message of a room with history that the broker ordered (any node's, ours too).

        Never waits, as :meth:`deliver_remote`: a frame that does not fit in the room's feed is
        dropped and counted in ``remote_frames_dropped`` (a client that misses it can recover it
        by rejoining at its last position). This node's own senders never cause that: they wait
        for a slot before publishing and hold it until their message arrives here. Clients still
        being replayed to hold it instead.

        Args:
            room: the room's name.
            frame: the encoded WebSocket frame.
            exclude: the id of a client that does not receive it.
            offset: the message's offset in the room's history.
        """
        shared = self._shared_history
        shared.delivered(room, offset)
        feed = self._feeds.get(room)
        if feed is None:
            return
        recipients = self._members_but(room, exclude)
        if self._held:
            recipients = shared.divert(recipients, frame, offset)
        recipients = shared.above_floor(room, recipients, offset)
        self._feeds.put_nowait(feed, frame, recipients)

    async def member_expired(self, member: Member) -> None:
        """Await ``on_member_expired(member)``: a member vanished with its node.

        An isolation boundary: what the callback raises (but cancellation) is logged and
        dropped, so one application callback cannot stop the broker's reaper.

        Args:
            member: the member that expired.
        """
        self._presence.expired(member)
        callback = self.on_member_expired
        if callback is None:
            return
        try:
            await callback(member)
        except Exception:  # one application callback must not stop the broker's reaper
            logger.exception("on_member_expired(%r) failed", member)

    def deliver_presence(self, diff: PresenceDiff) -> None:
        """Give a presence change another node published to this hub's watchers (never waits).

        Args:
            diff: the change.
        """
        self._presence.deliver(diff)
