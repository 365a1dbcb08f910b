"""The hub: registered clients, rooms, one feed per room, and the fan-out.

A room's *feed* (:class:`._fanout.Feed`, held in ``Hub._feeds``; ``Hub._all_feed`` serves
``broadcast_all``) is its bounded memory channel of broadcasts plus the state of the task that
fans them out: one structure, one name, here and in the docs.

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
    BrokerSink,
    Member,
    PresenceDiff,
    encode_envelope,
    merge_members,
    merge_presence,
    new_node_id,
    single_start_error,
)
from ._connection import MessageCodec, WebSocket
from ._errors import BrokerError
from ._fanout import Feed, SlowClientPolicy
from ._frames import message_frame
from ._history import History, HistoryBounds, Position, Recovery, stamp_offset
from ._json import dumps as dumps_json
from ._metrics import Metrics
from ._presence import PresenceBook, PresenceWatcher
from ._ratelimit import RateLimit, RateVerdict, TokenBucket
from ._rooms import Rooms
from ._transport import write_each

__all__ = ["Client", "Hub", "LocalBroker", "Sent", "SlowClientPolicy"]

logger = logging.getLogger("trionos.hub")

#: At most this many frames are held for one client while its recovery is read from the broker;
#: beyond that they are dropped (the client can rejoin at its last position to get them).
_MAX_HELD = 10_000

#: The close code sent to a client dropped by the ``disconnect`` policy (RFC 6455: policy violation).
SLOW_CLIENT_CLOSE_CODE = 1008
#: The close code sent to a client that kept sending over its rate limit (policy violation).
RATE_LIMIT_CLOSE_CODE = 1008


class LocalBroker:
    """The default broker of a :class:`~trionos.Hub` that is alone: one process, nothing to install.

    Every method is a no-op and ``shared`` is False, so a hub that uses it never calls them on
    its broadcast path: local delivery costs exactly what it did before brokers existed. (Called
    ``MemoryBroker`` before 0.2; that name still works, with a deprecation warning, until 0.3.)

    Args:
        node_id: this node's id in logs and envelopes; random unless given.
    """

    shared = False

    def __init__(self, *, node_id: str | None = None) -> None:
        self.node_id = node_id or new_node_id()

    def __repr__(self) -> str:
        return f"<trionos.LocalBroker {self.node_id}>"

    async def run(
        self, sink: BrokerSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Report started at once, then wait until cancelled: there is nothing to connect.

        Args:
            sink: the hub (unused: nothing ever arrives from another node).
            task_status: the ``nursery.start`` convention.
        """
        task_status.started()
        await trio.sleep_forever()

    def publish(self, room: str | None, envelope: bytes) -> None:
        """Do nothing: there is no other node to publish to.

        Args:
            room: the room (None: every client).
            envelope: the encoded envelope.
        """

    def open_room(self, room: str) -> None:
        """Do nothing: there is no other node to subscribe to.

        Args:
            room: the room.
        """

    def close_room(self, room: str) -> None:
        """Do nothing: there is no subscription to end.

        Args:
            room: the room.
        """

    def add_member(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """Do nothing: the hub's own rooms are the whole membership.

        Args:
            room: the room.
            client_id: the member's client id.
            name: the member's name.
            meta: the member's presence metadata.
        """

    def remove_member(self, room: str, client_id: str) -> None:
        """Do nothing: the hub's own rooms are the whole membership.

        Args:
            room: the room.
            client_id: the member's client id.
        """

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
        """Refuse: a hub alone keeps its rooms' histories in its own memory and never calls this.

        Raises:
            BrokerError: always (``shared`` is False).
        """
        await trio.lowlevel.checkpoint()
        raise BrokerError(f"{self!r} is not shared: the hub keeps room {room!r}'s history in memory")

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
        """Refuse, as :meth:`history_append` does.

        Raises:
            BrokerError: always (``shared`` is False).
        """
        await trio.lowlevel.checkpoint()
        raise BrokerError(f"{self!r} is not shared: the hub keeps room {room!r}'s history in memory")

    async def presence(self, room: str) -> list[Member] | None:
        """Answer that there is no cluster-wide registry.

        Args:
            room: the room (unused).

        Returns:
            None, so the hub lists its local members.
        """
        await trio.lowlevel.checkpoint()
        return None


class Client:
    """A registered connection: what :meth:`Hub.client <trionos.Hub.client>` returns and yields.

    Hashable by object identity. Make one with :meth:`Hub.client <trionos.Hub.client>`, not
    directly.

    Args:
        hub: the hub it registers with.
        ws: its connection.
        client_id: its id, unique in the hub while registered.
        name: the application's label for it (a username, say): what :meth:`Hub.presence
            <trionos.Hub.presence>` lists (with a shared broker, other nodes see the name it had
            when it joined a room).
        identity: who the client is across reconnections (default: ``client_id``, which is per
            connection). A room's history remembers the identity a broadcast excluded and never
            replays that message to the same identity.
    """

    def __init__(
        self, hub: Hub, ws: WebSocket, client_id: str, name: str | None, identity: str | None = None
    ) -> None:
        self.hub = hub
        self.ws = ws
        #: The connection's byte stream, for the broadcast fast path.
        self.transport = ws._transport
        self.id = client_id
        self.name = name
        #: Its message rate limit's state, made at its first :meth:`Hub.admit`.
        self._bucket: TokenBucket | None = None
        #: Who the client is across reconnections (a username, a session token): see the class doc.
        self.identity = identity if identity is not None else client_id

    def __repr__(self) -> str:
        return f"<trionos.Client {self.id} name={self.name!r}>"

    @property
    def rooms(self) -> list[str]:
        """The rooms this client is in, in the order it joined them."""
        return self.hub.rooms_of(self)

    def _before_write(self) -> None:
        """Called by the transport before a direct write: queued broadcasts go out first."""
        self.hub._flush_rooms_of(self)

    # ``hub.client(ws)`` returns the client itself, registered for the ``async with`` block: a
    # separate registration object would be one more allocation held by every connection.

    async def __aenter__(self) -> Client:
        self.hub._register(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.hub._unregister(self)


class _Snapshot:
    """A room's members as one tuple, shared by every broadcast until the membership changes.


    Copying a big room's members for every message would cost as much as a join; instead the
    tuple is made once per change, and a broadcast that leaves the sender out slices it (the
    position comes from ``index``, made the first time a member other than the newest is left
    out).
    """

    __slots__ = ("index", "members")

    def __init__(self, members: tuple[Client, ...]) -> None:
        self.members = members
        self.index: dict[Client, int] | None = None

    def without(self, client: Client) -> tuple[Client, ...]:
        """The members but *client*, in join order (the tuple itself when it is not a member)."""
        members = self.members
        if members and members[-1] is client:  # the newest member: its own "joined", say
            return members[:-1]
        if self.index is None:
            self.index = {member: i for i, member in enumerate(members)}
        i = self.index.get(client)
        return members if i is None else members[:i] + members[i + 1 :]


class Sent(int):
    """What :meth:`Hub.broadcast <trionos.Hub.broadcast>` returns: the local recipients and the position.

    An ``int`` (the count, as before history existed) with one more attribute, ``position``.

    Args:
        count: the number of local recipients.
        position: the :class:`~trionos.Position` the message got in the room's history, or None
            when the room keeps no history.
    """

    position: Position | None = None

    def __new__(cls, count: int, position: Position | None = None) -> Sent:
        sent = super().__new__(cls, count)
        if position is not None:
            sent.position = position
        return sent

    def __repr__(self) -> str:
        return f"Sent({int(self)}, position={self.position!r})"


def _bounds(value: HistoryBounds | bool | None) -> HistoryBounds | None:
    """The history bounds *value* stands for (True: the defaults; None or False: no history)."""
    if value is True:
        return HistoryBounds()
    if value is None or value is False:
        return None
    if isinstance(value, HistoryBounds):
        return value
    raise TypeError(f"history must be a HistoryBounds, True, False or None, got {value!r}")


def _policy(value: SlowClientPolicy | str) -> SlowClientPolicy:
    """The policy *value* names (raises ValueError for an unknown name)."""
    return value if isinstance(value, SlowClientPolicy) else SlowClientPolicy(value)


class Hub:
    """Clients, rooms and broadcast for one server process.

    Use it as ``async with trionos.Hub() as hub:`` (it owns a nursery for the rooms' fan-out
    tasks) or start it in a nursery you own with ``hub = await nursery.start(Hub().run)``.

    Bounds: each room's feed holds ``room_queue_size`` pending broadcasts (:meth:`broadcast`
    waits beyond that); each client's outbox holds the ``max_outbox_bytes`` given to
    :func:`~trionos.serve`, and ``policy`` says what happens beyond that. The Bounds and
    Design pages of the documentation follow the whole path.

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
        new_epoch: makes the epoch each room's history starts with (default: 8 random hex
            digits from :mod:`secrets`, so a restarted process names new epochs).
        metrics: the :class:`~trionos.Metrics` this hub counts into (a fresh one by default;
            pass the server's to see both in one place): broadcast messages and bytes out,
            frames dropped, slow-client disconnects, rate-limit refusals, remote frames dropped,
            and history appends, trims, replays and recoveries.
        max_presence_meta_bytes: the largest presence metadata a member may have (:meth:`join`,
            :meth:`update_presence`), in bytes of compact UTF-8 JSON.

    Raises:
        BrokerError: on entering (or from :meth:`run`, before ``started``), a shared broker
            cannot connect.
    """

    def __init__(
        self,
        *,
        policy: SlowClientPolicy | str = SlowClientPolicy.DISCONNECT,
        grace: float = 2.0,
        room_queue_size: int = 64,
        codec: MessageCodec[Any] | None = None,
        broker: Broker | None = None,
        on_member_expired: Callable[[Member], Awaitable[None]] | None = None,
        rate_limit: RateLimit | None = None,
        history: HistoryBounds | bool | None = None,
        offset_field: str | None = "offset",
        new_epoch: Callable[[], str] | None = None,
        metrics: Metrics | None = None,
        max_presence_meta_bytes: int = 1024,
    ) -> None:
        #: The broker this hub reports to (a private :class:`~trionos.LocalBroker` by default).
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.on_member_expired = on_member_expired
        # Checked on every broadcast, join and leave: False keeps the single-process path as it was.
        self._shared = self.broker.shared
        self._node_id = self.broker.node_id
        self.policy = _policy(policy)
        self.grace = grace
        self.room_queue_size = room_queue_size
        self.codec = codec
        self._rooms: Rooms[Client] = Rooms()
        self._feeds: dict[str, Feed[Client]] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._room_policies: dict[str, SlowClientPolicy] = {}
        self._clients: dict[str, Client] = {}
        self._clients_view = types.MappingProxyType(self._clients)
        self._nursery: trio.Nursery | None = None
        #: The per-client message rate limit that :meth:`admit` applies (None: no limit).
        self.rate_limit = rate_limit
        #: The counters this hub increments (share one :class:`~trionos.Metrics` with the server).
        self.metrics = metrics if metrics is not None else Metrics()
        #: Fan-out tasks running now (one per room with members, and one for ``broadcast_all``).
        self.fan_out_tasks = 0
        self._all_feed: Feed[Client] | None = None
        # Per client that made a room wait: (seconds waited in this episode, when the last wait ended).
        self._stall_times: dict[Client, tuple[float, float]] = {}
        self._stopped = False
        self._cm: AbstractAsyncContextManager[Hub, bool | None] | None = None
        self.offset_field = offset_field
        self._history_bounds = _bounds(history)
        self._room_history: dict[str, HistoryBounds | None] = {}
        self._new_epoch = new_epoch or (lambda: secrets.token_hex(4))
        self._history = History(self._history_bounds or HistoryBounds(), new_epoch=self._new_epoch)
        # With a shared broker: clients between "joined" and "replayed" (join_with_history), and the
        # frames that arrived for them meanwhile, as (offset or None, frame), in arrival order.
        self._pending: dict[Client, list[tuple[int | None, bytes]]] = {}
        # After such a replay: the last offset it covered, per (client, room). A message the
        # broker published before the replay was read can still be on its way to this node (the
        # subscription and the read are separate connections): those are dropped for the client.
        self._floors: dict[tuple[Client, str], int] = {}
        # Backpressure for those rooms, whose broadcasts reach the feed later, from the broker:
        # per room, this node's broadcasts published but not yet delivered back (each holds a slot
        # of the feed), the offset last delivered, and an event for senders waiting on it. The
        # last two exist only while the first does, so they stay as small as the broadcasts in
        # flight, however many rooms come and go.
        self._in_flight: dict[str, int] = {}
        self._delivered: dict[str, int] = {}
        self._delivery: dict[str, trio.Event] = {}
        self._presence = PresenceBook(self.broker, max_presence_meta_bytes)

    # --- lifetime ----------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This hub's node id (its broker's)."""
        return self._node_id

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

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the hub is not running: use `async with Hub()` or `nursery.start(hub.run)`")
        return self._nursery

    # --- registry ----------------------------------------------------------------------------

    def client(
        self,
        ws: WebSocket,
        *,
        client_id: str | None = None,
        name: str | None = None,
        identity: str | None = None,
    ) -> Client:
        """The client for *ws*, to register for an ``async with`` block.

        ``async with hub.client(ws) as client:`` registers it; on exit, whatever the cause
        (normal close, abrupt disconnect, heartbeat timeout, cancellation), the client leaves
        every room at once, without awaiting, after what its rooms had queued for it is written
        if its socket takes it.

        Args:
            ws: the client's connection.
            client_id: its id (default: the WebSocket's id); entering raises when it is taken.
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
        return Client(self, ws, client_id or ws.id, name, identity)

    def _register(self, client: Client) -> None:
        self._require_nursery()
        if client.id in self._clients:
            if self._clients[client.id] is client:
                raise RuntimeError(f"{client!r} is already registered: enter hub.client(ws) once")
            raise ValueError(f"a client with id {client.id!r} is already registered")
        self._clients[client.id] = client
        # A direct write on this connection first writes what its rooms have queued, so a
        # broadcast made before a send still arrives before it (see _fanout).
        client.transport.write_listener = client

    def _unregister(self, client: Client) -> None:
        self._flush_rooms_of(client)  # what it was sent before it left still goes out first
        client.transport.write_listener = None
        del self._clients[client.id]
        self._stall_times.pop(client, None)
        if self._floors:
            for room in self._rooms.rooms_view(client):
                self._floors.pop((client, room), None)
        for room in self._rooms.drop(client):
            self._snapshots.pop(room, None)
            self._presence.left(room, client.id, client.name)
            self._room_emptied_check(room)
        if not self._clients and self._all_feed is not None:
            self._all_feed.close()
            self._all_feed = None

    def _flush_rooms_of(self, client: Client) -> None:
        for room in self._rooms.rooms_view(client):
            feed = self._feeds.get(room)
            if feed is not None and feed.pending:
                feed.flush(self._deliver_now)
        if self._all_feed is not None and self._all_feed.pending:
            self._all_feed.flush(self._deliver_now)

    @property
    def clients(self) -> Mapping[str, Client]:
        """Registered clients by id: a live, read-only view (a :class:`types.MappingProxyType`).

        It follows registrations as they happen and cannot be changed through (register with
        :meth:`client`). Take ``dict(hub.clients)`` for a snapshot to keep across an ``await``:
        iterating the view while a client registers or leaves raises :class:`RuntimeError`.
        """
        return self._clients_view

    def get(self, client_id: str) -> Client | None:
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
        self._room_policies[room] = _policy(policy)
        if room in self._feeds:
            self._feeds[room].policy = self._room_policies[room]

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
        bounds = self._room_history[room] = _bounds(history)
        if bounds is None:
            self._history.drop(room)

    def history_bounds(self, room: str) -> HistoryBounds | None:
        """The bounds of *room*'s history.

        Args:
            room: the room's name.

        Returns:
            The :class:`~trionos.HistoryBounds`, or None when the room keeps no history.
        """
        return self._room_history.get(room, self._history_bounds)

    def position(self, room: str) -> Position | None:
        """The latest position in *room*'s history.

        Args:
            room: the room's name.

        Returns:
            The :class:`~trionos.Position` of its last message (offset 0 before the first), or
            None when the room keeps no history.
        """
        bounds = self.history_bounds(room)
        if bounds is None:
            return None
        return self._history.room(room, bounds).position

    def join(self, client: Client, room: str, *, meta: Mapping[str, Any] | None = None) -> bool:
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
            self._start_room(room)
        joined = self._rooms.join(client, room)
        if joined:
            self._snapshots.pop(room, None)
            self._presence.joined(room, client.id, client.name, checked)
        return joined

    def update_presence(self, client: Client, room: str, meta: Mapping[str, Any] | None) -> None:
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
        client: Client,
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
        broadcast) followed by every missed frame is queued for the client on the room's feed,
        so it reaches the client before any broadcast made after the join, through the same
        ordered path. The seam has no gap and no duplicate: a broadcast made before the join is
        in the history (replayed), one made after it is delivered live. Recoveries are counted in
        ``recoveries_complete``/``recoveries_partial``. The Recovery page of the documentation
        shows the client's side.

        Waits only when the room's feed is full (or, with a shared broker, for the broker's
        answer); if cancelled then, the client is taken out of the room again.

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
        if self._shared:
            return await self._join_shared(client, room, since, last, welcome, codec, bounds, meta)
        history = self._history.room(room, bounds)
        if last is not None:
            recovery = history.last(last, trio.current_time())
            self.metrics.messages_replayed += len(recovery.entries)
        elif since is None:
            recovery = Recovery(history.position, (), True)
        else:
            recovery = history.recover(since, trio.current_time(), client.identity)
            self._count_recovery(recovery)
        frames = [e.frame for e in recovery.entries]
        if welcome is not None:
            frames.insert(0, self.encode(welcome(recovery), codec))
        joined = self.join(client, room, meta=meta)
        await self._queue_replay(client, room, frames, joined)
        return recovery

    def _count_recovery(self, recovery: Recovery) -> None:
        metrics = self.metrics
        if recovery.complete:
            metrics.recoveries_complete += 1
        else:
            metrics.recoveries_partial += 1
        metrics.messages_replayed += len(recovery.entries)

    async def _join_shared(
        self,
        client: Client,
        room: str,
        since: Position | None,
        last: int | None,
        welcome: Callable[[Recovery], Any] | None,
        codec: MessageCodec[Any] | None,
        bounds: HistoryBounds,
        meta: Mapping[str, Any] | None,
    ) -> Recovery:
        """join_with_history with the history in the broker: join, hold live frames, read, replay.

        The client joins at once (so this node subscribes to the room) but what reaches it is
        held back until the broker has answered: then the welcome, the missed entries and the
        held frames that are not among them (by offset) are queued, in that order.
        """
        broker = self.broker
        joined = self.join(client, room, meta=meta)
        held = self._pending[client] = []
        try:
            if last is None:
                recovery = await broker.history_recover(
                    room, since, client.identity, bounds=bounds, epoch=self._new_epoch()
                )
            else:
                recovery = await broker.history_recover(
                    room, None, client.identity, bounds=bounds, epoch=self._new_epoch(), last=last
                )
        except BaseException:
            self._pending.pop(client, None)
            if joined:
                self.leave(client, room)
            raise
        del self._pending[client]
        last = recovery.position.offset
        newest = max((offset for offset, _ in held if offset is not None), default=last)
        self._floors[(client, room)] = max(last, newest)
        later = [frame for offset, frame in held if offset is None or offset > last]
        recovery = Recovery(
            Position(recovery.position.epoch, max(last, newest)), recovery.entries, recovery.complete
        )
        if since is not None:
            self._count_recovery(recovery)
        elif last is not None:
            self.metrics.messages_replayed += len(recovery.entries)
        frames = [e.frame for e in recovery.entries]
        if welcome is not None:
            frames.insert(0, self.encode(welcome(recovery), codec))
        frames += later
        await self._queue_replay(client, room, frames, joined)
        return recovery

    def _divert(self, recipients: tuple[Client, ...], frame: bytes, offset: int | None) -> tuple[Client, ...]:
        """Hold ``frame`` for the pending recipients (bounded); return the others."""
        pending = self._pending
        kept = []
        for client in recipients:
            held = pending.get(client)
            if held is None:
                kept.append(client)
            elif len(held) < _MAX_HELD:
                held.append((offset, frame))
        return tuple(kept)

    def _above_floor(self, room: str, recipients: tuple[Client, ...], offset: int) -> tuple[Client, ...]:
        """Drop ``offset`` for the clients whose replay covered it; a later offset ends the floor."""
        floors = self._floors
        kept = []
        for client in recipients:
            floor = floors.get((client, room))
            if floor is None:
                kept.append(client)
            elif offset > floor:
                del floors[(client, room)]  # the subscription caught up: in order from here
                kept.append(client)
        return tuple(kept)

    async def _queue_replay(self, client: Client, room: str, frames: list[bytes], joined: bool) -> None:
        """Queue ``frames`` for ``client`` on the room's feed, ahead of any later broadcast."""
        if frames:
            feed = self._feeds[room]
            blob = b"".join(frames)
            try:
                feed.put_nowait(blob, (client,))
            except trio.WouldBlock:
                try:
                    await feed.put(blob, (client,))
                except BaseException:
                    if joined:
                        self.leave(client, room)
                    raise

    def leave(self, client: Client, room: str) -> bool:
        """Remove *client* from *room*; an empty room disappears (its fan-out ends). Never awaits.

        Args:
            client: the client.
            room: the room's name.

        Returns:
            True if it was a member.
        """
        left = self._rooms.leave(client, room)
        if left:
            self._snapshots.pop(room, None)
            self._presence.left(room, client.id, client.name)
            self._room_emptied_check(room)
        return left

    def members(self, room: str) -> list[Client]:
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
        exclude: Client | None = None,
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
        recipients = self._recipients(room, exclude)
        if self._pending:
            recipients = self._divert(recipients, frame, None)
        return len(recipients) if self._put_remote(feed, frame, recipients) else 0

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

    def admit(self, client: Client) -> bool:
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
        bucket = client._bucket
        if bucket is None:
            bucket = client._bucket = limit.bucket(now)
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

    def rooms_of(self, client: Client) -> list[str]:
        """The rooms *client* is in.

        Args:
            client: the client.

        Returns:
            Their names, in the order it joined them.
        """
        return self._rooms.rooms_of(client)

    def _start_room(self, room: str) -> None:
        nursery = self._require_nursery()
        feed = Feed[Client](room, self.room_queue_size, self._room_policies.get(room, self.policy))
        self._feeds[room] = feed
        self._start_fan_out(nursery, feed)
        if self._shared:
            self.broker.open_room(room)

    def _room_emptied_check(self, room: str) -> None:
        if not self._rooms.member_view(room) and room in self._feeds:
            # Closing the feed is how the fan-out task learns it is done; it still delivers
            # what is already queued to the recipients snapshotted at broadcast time.
            self._feeds.pop(room).close()
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
        codec = codec or self.codec
        if codec is None:
            raise TypeError(
                f"cannot broadcast a {type(message).__name__} without a codec: pass codec= or Hub(codec=...)"
            )
        return message_frame(codec.encode(message))

    def _encode_at(self, message: Any, codec: MessageCodec[Any] | None, offset: int) -> bytes:
        """Encode ``message`` with its offset stamped in (codec-encoded JSON objects only)."""
        field = self.offset_field
        if field is None or isinstance(message, str | bytes):
            return self.encode(message, codec)
        codec = codec or self.codec
        if codec is None:
            return self.encode(message, codec)  # raises the usual TypeError
        return message_frame(stamp_offset(codec.encode(message), field, offset))

    async def broadcast(
        self,
        room: str,
        message: Any,
        *,
        exclude: Client | None = None,
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
        bounds = self._room_history.get(room, self._history_bounds) if history else None
        if bounds is None:
            frame = self.encode(message, codec)
            position = None
        elif self._shared:
            return await self._broadcast_shared(room, message, exclude, codec, bounds)
        else:
            kept = self._history.room(room, bounds)
            frame = self._encode_at(message, codec, kept.offset + 1)
            entry, trimmed = self._history.append(
                room, frame, None if exclude is None else exclude.identity, trio.current_time()
            )
            position = Position(kept.epoch, entry.offset)
            self.metrics.history_appended += 1
            self.metrics.history_trimmed += trimmed
        if self._shared:
            exclude_id = None if exclude is None else exclude.id
            self.broker.publish(room, encode_envelope(self._node_id, exclude_id, frame))
        feed = self._feeds.get(room)
        if feed is None:
            return Sent(0, position)
        recipients = self._recipients(room, exclude)
        count = len(recipients)
        if self._pending:
            recipients = self._divert(recipients, frame, None)
        if recipients and not await feed.put(frame, recipients):
            return Sent(0, position)  # the hub has stopped: dropped quietly
        return Sent(count, position)

    async def _broadcast_shared(
        self,
        room: str,
        message: Any,
        exclude: Client | None,
        codec: MessageCodec[Any] | None,
        bounds: HistoryBounds,
    ) -> Sent:
        """A broadcast into a room whose history is in the broker: the broker assigns the offset
        and delivers it to every node, this one included (:meth:`deliver_history`)."""
        broker = self.broker
        payload: str | bytes
        if isinstance(message, str | bytes):
            payload, member = message, None
        else:
            codec = codec or self.codec
            if codec is None:
                self.encode(message, codec)  # raises the usual TypeError
            assert codec is not None
            payload = codec.encode(message)
            member = None if self.offset_field is None else f"{dumps_json(self.offset_field)}:"
        feed = self._feeds.get(room)
        if feed is None:
            position = await self._append_shared(broker, room, payload, exclude, member, bounds)
        else:
            # Backpressure, as a local broadcast has it: wait while the room's feed is full (a
            # slow member holds it for at most ``grace``), counting this node's broadcasts still on
            # their way back from the broker; then hold a slot until this one is delivered.
            in_flight = self._in_flight
            await feed.wait_for_room(lambda: in_flight.get(room, 0) + 1)
            in_flight[room] = in_flight.get(room, 0) + 1
            try:
                position = await self._append_shared(broker, room, payload, exclude, member, bounds)
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
        count = sum(1 for c in self._rooms.member_view(room) if c is not exclude)
        return Sent(count, position)

    async def _append_shared(
        self,
        broker: Broker,
        room: str,
        payload: str | bytes,
        exclude: Client | None,
        member: str | None,
        bounds: HistoryBounds,
    ) -> Position:
        position = await broker.history_append(
            room,
            payload,
            exclude_id=None if exclude is None else exclude.id,
            exclude_identity=None if exclude is None else exclude.identity,
            bounds=bounds,
            offset_member=member,
            epoch=self._new_epoch(),
        )
        self.metrics.history_appended += 1
        return position

    async def broadcast_all(
        self, message: Any, *, exclude: Client | None = None, codec: MessageCodec[Any] | None = None
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
        all_feed = self._all_clients_feed()
        recipients = tuple(c for c in self._clients.values() if c is not exclude)
        if recipients and await all_feed.put(frame, recipients):
            return len(recipients)
        return 0

    def _recipients(self, room: str, exclude: Client | None) -> tuple[Client, ...]:
        """The members of ``room`` but ``exclude``, from the room's shared snapshot."""
        snapshot = self._snapshots.get(room)
        if snapshot is None:
            snapshot = self._snapshots[room] = _Snapshot(tuple(self._rooms.member_view(room)))
        return snapshot.members if exclude is None else snapshot.without(exclude)

    def _all_clients_feed(self) -> Feed[Client]:
        if self._all_feed is None:
            self._all_feed = Feed[Client]("*", self.room_queue_size, self.policy)
            self._start_fan_out(self._require_nursery(), self._all_feed)
        return self._all_feed

    def _start_fan_out(self, nursery: trio.Nursery, feed: Feed[Client]) -> None:
        self.fan_out_tasks += 1
        nursery.start_soon(feed.run, self._deliver_now, self._wait_for_room, self._fan_out_ended)

    def _fan_out_ended(self) -> None:
        self.fan_out_tasks -= 1

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
        feed: Feed[Client] | None
        if room is None:
            if not self._clients or self._nursery is None:
                return
            feed = self._all_clients_feed()
            recipients = tuple(c for c in self._clients.values() if c.id != exclude)
        else:
            feed = self._feeds.get(room)
            if feed is None:
                return
            recipients = self._recipients(room, None if exclude is None else self._clients.get(exclude))
        if self._pending:
            recipients = self._divert(recipients, frame, None)
        self._put_remote(feed, frame, recipients)

    def _members_but(self, room: str, exclude: str | None) -> tuple[Client, ...]:
        """The local members of ``room`` but the client with id ``exclude``."""
        view = self._rooms.member_view(room)
        return tuple(view) if exclude is None else tuple(c for c in view if c.id != exclude)

    def _put_remote(self, feed: Feed[Client], frame: bytes, recipients: tuple[Client, ...]) -> bool:
        """Queue a frame from the broker without waiting; drop and count it when the room is full."""
        if not recipients:
            return False
        try:
            feed.put_nowait(frame, recipients)
            return True
        except trio.WouldBlock:
            self.metrics.remote_frames_dropped += 1
            dropped = self.metrics.remote_frames_dropped
            if dropped & (dropped - 1) == 0:
                logger.warning(
                    "room %r is backlogged: %d frames from other nodes dropped so far", feed.name, dropped
                )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the hub is shutting down
        return False

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
        if room in self._in_flight:  # a sender here waits for its own message to come back
            self._delivered[room] = offset
            event = self._delivery.pop(room, None)
            if event is not None:
                event.set()
        feed = self._feeds.get(room)
        if feed is None:
            return
        recipients = self._members_but(room, exclude)
        if self._pending:
            recipients = self._divert(recipients, frame, offset)
        if self._floors:
            recipients = self._above_floor(room, recipients, offset)
        self._put_remote(feed, frame, recipients)

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

    def _deliver_now(
        self, feed: Feed[Client], frame: bytes, recipients: tuple[Client, ...]
    ) -> tuple[Client, ...]:
        """Write without waiting; return the recipients the room's policy says to wait for."""
        # Counted once per batch, not per recipient: two additions whatever the room's size.
        metrics = self.metrics
        metrics.messages_out += feed.batch_messages * len(recipients)
        metrics.bytes_out += len(frame) * len(recipients)
        pending = write_each(recipients, frame)
        if not pending:
            return ()
        policy = feed.policy
        slow = tuple(c for c in pending if not self._offer(c, frame, policy))
        if len(slow) > 1 and self._stall_times:
            # Wait for the least indebted first: whoever has room by the time its turn comes
            # kept up and is cleared, so among equally slow clients the waits do not all land
            # on the one that joined first.
            slow = tuple(sorted(slow, key=self._debt))
        return slow

    def _debt(self, client: Client) -> float:
        return self._stall_times.get(client, (0.0, 0.0))[0]

    def _offer(self, client: Client, frame: bytes, policy: SlowClientPolicy) -> bool:
        # The fast path: no await, no task switch. False only when the outbox is full.
        if client.ws.closed:
            # Its peer is gone or closing (a stream without a socket, TLS say, can look open
            # until its writer fails): drop the frame rather than queue it for nobody.
            return True
        transport = client.transport
        try:
            if policy is SlowClientPolicy.DROP_OLDEST:
                self.metrics.frames_dropped += transport.write_dropping_oldest(frame)
                return True
            return transport.write_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # gone: its handler is ending and will unregister it

    async def _wait_for_room(self, client: Client, frame: bytes) -> None:
        """Wait for room in a slow client's outbox; drop it once the room has waited ``grace`` in total.

        The time the fan-out spends waiting for one client adds up over its stalls, however much
        it reads in between; the sum starts again from zero once the room has gone a whole
        ``grace`` period without waiting for it, or when it had room at once while the room
        waited for another client (it kept up). So a client that reads, but more slowly than the
        rest of its room, costs the room at most ``grace`` seconds before it is closed.
        """
        transport = client.transport
        # Try first: while the fan-out waited for another slow client of the same frame, this
        # one may have drained its outbox already, and then no progress would ever come. If so
        # it kept up while the room waited for another: its total starts again.
        try:
            if transport.write_nowait(frame):
                self._stall_times.pop(client, None)
                return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        started = trio.current_time()
        waited, last = self._stall_times.get(client, (0.0, -math.inf))
        if started - last > self.grace:
            waited = 0.0
        deadline = started + self.grace - waited
        try:
            while True:
                with trio.move_on_at(deadline) as wait:
                    await transport.wait_for_progress()
                if wait.cancelled_caught:
                    break
                try:
                    if transport.write_nowait(frame):
                        return
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
        finally:
            now = trio.current_time()
            self._stall_times[client] = (waited + now - started, now)
        self._drop_slow_client(client)

    def _drop_slow_client(self, client: Client) -> None:
        self._stall_times.pop(client, None)
        self.metrics.slow_client_disconnects += 1
        reason = f"slow client: outbox full for {self.grace:g} s in total"
        logger.warning("closing %r: %s", client, reason)
        client.ws.abort(SLOW_CLIENT_CLOSE_CODE, reason)
