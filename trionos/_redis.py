"""The Redis broker: rooms that span processes and hosts, through Redis pub/sub (coredis).

Imported only when :class:`RedisBroker` is used, so coredis is needed only then
(``pip install 'trionos[redis]'``). The broker has three jobs, in three modules:

* **Broadcasts** (here). A node publishes each broadcast once, as an envelope (origin node,
  excluded client, frame: see :mod:`trionos._broker`), on the room's channel
  ``{prefix}:room:{room}`` (``{prefix}:all`` for ``broadcast_all``). Local members already got it
  directly. A node subscribes only to the rooms that have local members, so it never decodes
  traffic of rooms it does not serve, and it skips its own publications by their origin.
* **Presence** (:mod:`trionos._redis_presence`): one record per membership, node keys with a
  TTL, and the reaping of dead nodes.
* **History** (:mod:`trionos._redis_history`): a room with history keeps its messages in a
  Redis stream; one Lua script gives a message its offset, appends it and publishes it, so
  offsets and delivery order are the same on every node. Every node (the origin too) delivers
  history messages from its subscription: a broadcast into a room that has local members waits
  (up to ``operation_timeout``) until this node is subscribed to it.

What they share (coredis, the transient errors, the link state) is in
:mod:`trionos._redis_link`, the one module that imports coredis.

Tasks (all in the nursery of :meth:`RedisBroker.run`): the **reader** (a ``get_message`` loop,
never ``async for``, which can end silently after a reconnect), the **publisher** (drains the
bounded outgoing queue and sends whatever is queued as one pipeline), the **syncer** (brings
subscriptions and presence records in line with the local rooms), the **heartbeat** and the
**reaper**. Every retry loop waits by a :class:`~trionos.Backoff` capped at
``reconnect_max_delay``.

Bounds and failure behaviour:

* Start-up: ``run`` raises :class:`~trionos.BrokerError` if Redis does not answer within
  ``connect_timeout`` seconds (or refuses us, e.g. a wrong password).
* Outgoing: at most ``publish_queue_size`` envelopes wait; ``publish`` never blocks, and what
  does not fit is dropped and counted in :attr:`RedisBroker.publish_dropped`. A pipeline sends at
  most ``max_batch`` of them. **While Redis is unreachable, publications are dropped** (counted),
  never replayed: a chat message sent during an outage reaches local members only.
* Incoming: the reader never waits on a room. A frame that does not fit in the room's channel is
  dropped and counted by the hub (``hub.remote_frames_dropped``). coredis buffers received
  messages without a bound of its own; the reader drains that buffer as fast as it can.
* Redis restarts: coredis reconnects the pub/sub connection and re-subscribes by itself (retry
  delays capped at ``reconnect_max_delay``); the heartbeat notices that this node's registration
  is gone (``SADD`` answers 1) and the syncer registers every local member again. Local delivery
  never depends on Redis. While Redis is unreachable, ``presence`` lists the local members only.
* History: **while Redis is unreachable a room with history cannot give out positions:**
  ``broadcast`` raises :class:`~trionos.BrokerError` (the message reaches nobody, not even
  local members) and ``join_with_history`` raises it too (the client joins nothing). A history
  message published while this node's subscription is reconnecting is not delivered live here;
  it stays in the stream, and the gap shows in the offsets (a client that sees offset n + 2
  after n rejoins at n to recover it). The byte bound of :class:`~trionos.HistoryBounds`
  applies to the in-memory history only.
* Every Redis operation is bounded by ``operation_timeout``; on shutdown the queued publications
  are flushed and this node's records removed, within ``close_timeout``.
* A node that dies (SIGKILL, power loss) has its members reported as expired by another node
  within about ``presence_ttl + heartbeat_interval`` seconds. A node that stays cut off from Redis
  for longer than ``presence_ttl`` is taken for dead too; when it comes back its members are
  registered again (the other nodes are not told that they came back).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ._broker import (
    BrokerSink,
    Member,
    encode_history_head,
    new_node_id,
    single_start_error,
)
from ._errors import BrokerError
from ._history import HistoryBounds, Position, Recovery
from ._metrics import Metrics
from ._redis_history import StreamHistory
from ._redis_link import (
    FIRST_DELAY,
    RETRYABLE_AT_START,
    TRANSIENT,
    CompositeRetryPolicy,
    ExponentialBackoffRetryPolicy,
    Link,
    RedisConnectionError,
    RedisError,
    coredis,
    new_backoff,
    redact,
)
from ._redis_presence import PresenceRegistry
from ._redis_publisher import Publisher
from ._redis_reader import Reader

__all__ = ["RedisBroker"]

logger = logging.getLogger("trionos.redis")


class RedisBroker:
    """Connects hubs in several processes or hosts through Redis: ``Hub(broker=RedisBroker(url))``.

    Nodes that share a Redis and a ``prefix`` share rooms: broadcasts, presence and the rooms'
    history (see ``docs/scale-out.md`` for the keys and the failure behaviour). Counters:
    :attr:`published`, :attr:`publish_dropped`, :attr:`received`, :attr:`history_gaps`;
    :attr:`connected` says whether the last Redis operation succeeded. A broker runs once.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
        prefix: the prefix of every key and channel this broker uses.
        node_id: this node's id, unique in the cluster (default: a random one per broker).
        connect_timeout: seconds for start-up; then :meth:`run` raises
            :class:`~trionos.BrokerError`.
        operation_timeout: seconds per Redis operation.
        presence_ttl: seconds after which a silent node's members expire.
        heartbeat_interval: seconds between a node's heartbeats (``presence_ttl / 3``); also how
            often dead nodes are looked for.
        publish_queue_size: envelopes that may wait to be published; beyond that they are
            dropped and counted.
        max_batch: envelopes per pipeline.
        reconnect_max_delay: the longest wait between two reconnection attempts, in seconds.
        close_timeout: seconds for the flush and clean-up on shutdown.
        metrics: the counters to update (``broker_publish_dropped``, ``broker_reconnects``).

    Raises:
        ValueError: a timeout or interval is not positive, ``heartbeat_interval`` is not
            shorter than ``presence_ttl``, or a size is below 1.
        ImportError: coredis is not installed (``pip install 'trionos[redis]'``).
    """

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        prefix: str = "trionos",
        node_id: str | None = None,
        connect_timeout: float = 5.0,
        operation_timeout: float = 2.0,
        presence_ttl: float = 15.0,
        heartbeat_interval: float | None = None,
        publish_queue_size: int = 1024,
        max_batch: int = 256,
        reconnect_max_delay: float = 1.0,
        close_timeout: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        heartbeat_interval = presence_ttl / 3 if heartbeat_interval is None else heartbeat_interval
        for what, value in (
            ("connect_timeout", connect_timeout),
            ("operation_timeout", operation_timeout),
            ("presence_ttl", presence_ttl),
            ("heartbeat_interval", heartbeat_interval),
            ("reconnect_max_delay", reconnect_max_delay),
            ("close_timeout", close_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{what} must be positive, got {value!r}")
        if heartbeat_interval >= presence_ttl:
            raise ValueError(
                f"heartbeat_interval ({heartbeat_interval:g} s) must be shorter than "
                f"presence_ttl ({presence_ttl:g} s), or live nodes would expire"
            )
        if publish_queue_size < 1 or max_batch < 1:
            raise ValueError(
                f"publish_queue_size and max_batch must be at least 1, got {publish_queue_size}, {max_batch}"
            )
        self.url = url
        self.prefix = prefix
        self.node_id = node_id or new_node_id()
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self.presence_ttl = presence_ttl
        self.heartbeat_interval = heartbeat_interval
        self.publish_queue_size = publish_queue_size
        self.max_batch = max_batch
        self.reconnect_max_delay = reconnect_max_delay
        self.close_timeout = close_timeout
        #: Shared counters: ``broker_publish_dropped`` and ``broker_reconnects`` are counted here.
        self.metrics = metrics if metrics is not None else Metrics()

        self._link = Link(url, operation_timeout, self.metrics)
        self._presence = PresenceRegistry(
            self._link,
            prefix,
            self.node_id,
            presence_ttl=presence_ttl,
            heartbeat_interval=heartbeat_interval,
        )
        self._history = StreamHistory(self._link, prefix, self.metrics)
        self._all_channel = f"{prefix}:all".encode()
        self._publisher = Publisher(
            self._link,
            self.metrics,
            queue_size=publish_queue_size,
            max_batch=max_batch,
            reconnect_max_delay=reconnect_max_delay,
        )
        self._started = False
        self._start_error: BaseException | None = None
        # Rooms with local members: channel -> room (the reader maps channels back with it).
        self._channel_rooms: dict[bytes, str] = {}
        self._reader = Reader(self.node_id, self._all_channel, self._channel_rooms)
        self._room_channels: dict[str, bytes] = {}
        self._subscribed: set[bytes] = set()
        # Every change to the rooms or memberships bumps the generation; the syncer records the
        # generation it brought Redis in line with, and wakes those waiting for it.
        self._generation = 0
        self._synced_generation = 0
        self._changed = trio.Event()
        self._synced = trio.Event()

    def __repr__(self) -> str:
        return f"<trionos.RedisBroker {self.node_id} {redact(self.url)} prefix={self.prefix!r}>"

    @property
    def published(self) -> int:
        """Envelopes published to Redis (history messages included)."""
        return self._publisher.published

    @property
    def publish_dropped(self) -> int:
        """Envelopes dropped: queue full, or Redis unreachable."""
        return self._publisher.dropped

    @property
    def received(self) -> int:
        """Envelopes from other nodes handed to the hub (history messages: every node's)."""
        return self._reader.received

    @property
    def history_gaps(self) -> int:
        """History messages this node's subscription missed, seen as skipped offsets (published
        while coredis was reconnecting it): they are in the stream, clients recover them."""
        return self._reader.history_gaps

    @property
    def connected(self) -> bool:
        """Whether the last Redis operation succeeded."""
        return self._link.connected

    def _channel(self, room: str) -> bytes:
        return f"{self.prefix}:room:{room}".encode()

    # --- what the hub calls (synchronous, never blocks) -----------------------------------------

    def publish(self, room: str | None, envelope: bytes) -> None:
        """Queue *envelope* for the room's channel; drop and count it when the queue is full.

        Args:
            room: the room, or None for every client of every node.
            envelope: the broadcast as the hub encoded it for other nodes.
        """
        channel = self._all_channel if room is None else self._room_channels.get(room) or self._channel(room)
        self._publisher.offer(channel, envelope)

    def open_room(self, room: str) -> None:
        """The room got its first local member: subscribe to its channel (in the background)."""
        channel = self._channel(room)
        self._room_channels[room] = channel
        self._channel_rooms[channel] = room
        self._wake()

    def close_room(self, room: str) -> None:
        """The room has no local member any more: unsubscribe (messages still in flight are ignored)."""
        channel = self._room_channels.pop(room, None)
        self._reader.forget(room)
        if channel is not None:
            del self._channel_rooms[channel]
            self._wake()

    def add_member(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """Register a local membership (or its new metadata) in the shared presence (by the syncer)."""
        self._presence.add(room, client_id, name, meta)
        self._wake()

    def remove_member(self, room: str, client_id: str) -> None:
        """Remove a local membership from the shared presence (by the syncer)."""
        if self._presence.remove(room, client_id):
            self._wake()

    def _wake(self) -> None:
        self._generation += 1
        self._changed.set()

    async def _until_synced(self) -> None:
        """Wait until the syncer has caught up with every change made so far (up to operation_timeout)."""
        with trio.move_on_after(self.operation_timeout):
            target = self._generation
            while self._synced_generation < target:
                await self._synced.wait()

    async def presence(self, room: str) -> list[Member] | None:
        """Every node's records for *room*, once this node's pending changes are in Redis.

        Returns:
            The members in join order; None, without waiting, while Redis is unreachable, and
            None after ``operation_timeout`` if Redis does not answer (the hub then lists its
            local members).
        """
        link = self._link
        client = link.client
        if client is None or not link.connected:
            await trio.lowlevel.checkpoint()
            return None
        try:
            with trio.fail_after(self.operation_timeout):
                target = self._generation
                while self._synced_generation < target:
                    await self._synced.wait()
                return await self._presence.read(client, room)
        except TRANSIENT as exc:
            link.set_connected(False, exc)
            return None

    # --- history --------------------------------------------------------------------------------

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
        """Give *payload* the room's next offset in Redis, keep it and publish it to every node.

        Every node delivers it from its subscription, this one included. When the room has local
        members but this node's subscription to it is not in place yet (a member just joined),
        waits for it first, up to ``operation_timeout``, so that they receive the message live.

        Args:
            room: the room (it has a history).
            payload: the message as sent (text or bytes).
            exclude_id: the connection id of the member that does not receive it live.
            exclude_identity: the identity that does not receive it in a replay.
            bounds: the room's history bounds (messages, bytes of payloads, age).
            offset_member: ``'"offset":'`` stamps the offset into a JSON object payload
                (``'"epoch":'`` newline ``'"offset":'`` stamps the epoch before it); None leaves
                the payload as is.
            epoch: the epoch to start the room's history with if Redis has none.

        Returns:
            The message's position.

        Raises:
            BrokerUncertain: Redis did not answer within ``operation_timeout``: the message may
                have been kept and delivered all the same.
            BrokerError: Redis is known unreachable: the message has no position and was sent to
                nobody.
        """
        channel = self._room_channels.get(room)
        if channel is not None and channel not in self._subscribed:
            await self._until_synced()
        head = encode_history_head(self.node_id, exclude_id, binary=isinstance(payload, bytes))
        position = await self._history.append(
            room,
            payload,
            channel=channel or self._channel(room),
            head=head,
            exclude_identity=exclude_identity,
            bounds=bounds,
            offset_member=offset_member,
            epoch=epoch,
        )
        self._publisher.published += 1
        return position

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
        """What a client at *since* missed in *room*, or its last *last* messages, read from Redis.

        Waits first (up to ``operation_timeout``) until this node's subscriptions are in place,
        so that every message after the answer reaches this node live.

        Args:
            room: the room (it has a history).
            since: the client's last position; None reads nothing (the latest position only),
                unless *last* is given.
            identity: entries that excluded this identity are left out (with *since*).
            bounds: the room's history bounds (the age bound trims before reading).
            epoch: the epoch to start the room's history with if Redis has none.
            last: read the room's last *last* messages instead, every one (*since* is None).

        Returns:
            The room's latest position, the entries, and whether they are all that was asked.

        Raises:
            BrokerError: as :meth:`history_append`.
        """
        await self._until_synced()
        return await self._history.recover(room, since, identity, bounds=bounds, epoch=epoch, last=last)

    # --- lifetime -------------------------------------------------------------------------------

    async def run(
        self, sink: BrokerSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, subscribe and register this node, then serve *sink* until cancelled.

        Cancellation after start-up is an orderly stop, bounded by ``close_timeout``: the tasks
        end, the queued publications are flushed, this node's records are removed, and the
        connections are closed.

        Args:
            sink: the hub: what the broker delivers to and reports expired members to.
            task_status: started once Redis answered and this node is registered.

        Raises:
            BrokerError: Redis does not answer within ``connect_timeout``, or refuses us.
            RuntimeError: the broker has run already.
        """
        if self._started:
            raise RuntimeError(f"{self!r} has run already: a broker runs once, make a new one")
        self._started = True
        try:
            async with trio.open_nursery() as nursery:
                stop = await nursery.start(self._session, sink)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    stop()
        except BaseExceptionGroup as group:
            if (error := single_start_error(group)) is not None:
                raise error from None
            raise

    async def _session(self, sink: BrokerSink, *, task_status: trio.TaskStatus[Callable[[], None]]) -> None:
        # coredis' clean-up (unsubscribing, closing the pool) needs its connection tasks alive:
        # once started, the session is shielded from outside cancellation, and ``stop`` ends it in
        # order instead: our tasks first, then the flush, then coredis, all within close_timeout.
        tasks = trio.CancelScope()
        stopping = False
        link = self._link

        def stop() -> None:
            nonlocal stopping
            stopping = True
            session.deadline = trio.current_time() + self.close_timeout
            tasks.cancel()

        client = self._new_client()
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.connect_timeout) as session:
                async with client:
                    await self._wait_until_reachable(client, session)
                    pubsub = client.pubsub(
                        ignore_subscribe_messages=True,
                        retry_policy=self._retry_policy(),
                        subscription_timeout=self.operation_timeout,
                    )
                    async with pubsub:
                        await pubsub.subscribe(self._all_channel)
                        await self._presence.heartbeat_once(client)
                        link.client = client
                        link.connected = True
                        session.deadline = math.inf
                        session.shield = True
                        try:
                            with tasks:
                                async with trio.open_nursery() as nursery:
                                    self._history.nursery = nursery
                                    nursery.start_soon(self._reader.run, pubsub, sink)
                                    nursery.start_soon(self._publisher.run, client)
                                    nursery.start_soon(self._sync_loop, client, pubsub)
                                    nursery.start_soon(self._presence.heartbeat_loop, client, self._on_lost)
                                    nursery.start_soon(self._presence.reap_loop, client, sink)
                                    logger.info("node %s joined Redis at %s", self.node_id, redact(self.url))
                                    task_status.started(stop)
                        finally:
                            self._history.nursery = None
                            link.client = None
                            link.connected = False
                        await self._close(client)
        except Exception as exc:
            # An isolation boundary: once stopping, coredis' teardown may fail on a Redis that is
            # gone or slow; that must not turn a clean shutdown into a crash.
            if not stopping:
                raise
            logger.warning("closing the Redis connection of node %s failed: %r", self.node_id, exc)
            return
        if session.cancelled_caught and not stopping:
            error = self._start_error
            detail = f": {error}" if error is not None else ""
            if error is not None and not isinstance(error, RETRYABLE_AT_START):
                raise BrokerError(f"Redis at {redact(self.url)} refused the connection{detail}") from error
            raise BrokerError(
                f"cannot reach Redis at {redact(self.url)} within {self.connect_timeout:g} s{detail}"
            ) from error

    def _new_client(self) -> Any:
        return coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=self.operation_timeout,
            client_name=f"trionos-{self.node_id}",
        )

    def _retry_policy(self) -> CompositeRetryPolicy:
        # coredis reconnects the pub/sub connection by itself, with its own retry policy: its
        # default backoff grows to 16 s and never resets, so cap it at reconnect_max_delay too,
        # so that a restarted Redis is found again within that.
        return CompositeRetryPolicy(
            ExponentialBackoffRetryPolicy(
                (RedisConnectionError,),
                retries=None,
                base_delay=min(FIRST_DELAY, self.reconnect_max_delay),
                max_delay=self.reconnect_max_delay,
                jitter=True,
            ),
            ExponentialBackoffRetryPolicy(
                (TimeoutError,),
                retries=None,
                base_delay=min(FIRST_DELAY, self.reconnect_max_delay),
                max_delay=self.reconnect_max_delay,
                jitter=True,
            ),
        )

    async def _wait_until_reachable(self, client: Any, startup: trio.CancelScope) -> None:
        """PING until Redis answers; the ``startup`` scope's deadline bounds the wait."""
        backoff = new_backoff(self.reconnect_max_delay)
        while True:
            try:
                with trio.fail_after(self.operation_timeout):
                    await client.ping()
                return
            except RETRYABLE_AT_START as exc:
                self._start_error = exc
            except RedisError as exc:  # refused (authentication, ...): retrying cannot help
                self._start_error = exc
                startup.cancel()
            await trio.sleep(backoff.next_delay())

    async def _close(self, client: Any) -> None:
        """Flush what is queued and remove this node's records (bounded by the session's deadline)."""
        try:
            await self._publisher.flush(client)
            await self._presence.deregister(client)
        except TRANSIENT as exc:
            logger.warning("could not remove node %s from Redis on shutdown: %s", self.node_id, exc)
        else:
            logger.info("node %s left Redis", self.node_id)

    # --- syncer: subscriptions and presence records ----------------------------------------------

    def _on_lost(self) -> None:
        """The heartbeat found this node's registration gone: wake the syncer to register again."""
        self._changed.set()

    async def _sync_loop(self, client: Any, pubsub: Any) -> None:
        backoff = new_backoff(self.reconnect_max_delay)
        while True:
            while self._synced_generation == self._generation and not self._presence.lost:
                await self._changed.wait()
            self._changed = trio.Event()
            target = self._generation
            try:
                with trio.fail_after(self.operation_timeout):
                    await self._sync_once(client, pubsub)
            except TRANSIENT as exc:
                self._link.set_connected(False, exc)
                await trio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._synced_generation = target
            self._synced.set()
            self._synced = trio.Event()

    async def _sync_once(self, client: Any, pubsub: Any) -> None:
        # Subscribe before registering, so a member is reachable once others can see it.
        wanted = self._channel_rooms
        subscribe = [channel for channel in wanted if channel not in self._subscribed]
        unsubscribe = [channel for channel in self._subscribed if channel not in wanted]
        if subscribe:
            await pubsub.subscribe(*subscribe)
            self._subscribed.update(subscribe)
        if unsubscribe:
            await pubsub.unsubscribe(*unsubscribe)
            self._subscribed.difference_update(unsubscribe)
        await self._presence.sync(client)
