"""The Redis broker: rooms that span processes and hosts, through Redis pub/sub (coredis).

Imported only when :class:`RedisBroker` is used, so coredis is needed only then
(``pip install 'trionos[redis]'``).

What goes through Redis, per node (a process running one :class:`~trionos.Hub`):

* **Broadcasts.** A node publishes each broadcast once, as an envelope (origin node, excluded
  client, frame: see :mod:`trionos._broker`), on the room's channel ``{prefix}:room:{room}``
  (``{prefix}:all`` for ``broadcast_all``). Local members already got it directly. A node
  subscribes only to the rooms that have local members, so it never decodes traffic of rooms it
  does not serve, and it skips its own publications by their origin.
* **Presence.** Each membership is a record in the sorted set ``{prefix}:presence:{room}``,
  scored by the shared counter ``{prefix}:seq`` (join order across nodes). Each node keeps the key
  ``{prefix}:node:{id}`` alive with a TTL (``presence_ttl``) refreshed every ``heartbeat_interval``
  and is listed in ``{prefix}:nodes``; ``{prefix}:node:{id}:rooms`` lists the rooms it has records
  in. A node whose key expired is reaped by one of the others (a ``SET NX`` claim), which removes
  its records and passes each one to the hub's ``on_member_expired`` callback.

Tasks (all in the nursery of :meth:`RedisBroker.run`): the **reader** (a ``get_message`` loop,
never ``async for``, which can end silently after a reconnect), the **publisher** (drains the
bounded outgoing queue and sends whatever is queued as one pipeline), the **syncer** (brings
subscriptions and presence records in line with the local rooms), the **heartbeat** and the
**reaper**.

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
* **History.** A room with history (``Hub(history=...)``) keeps its messages in the stream
  ``{prefix}:history:{room}`` (entry id ``<milliseconds>-<offset>``, fields ``p`` the payload with
  its offset stamped in, ``x`` the excluded identity, ``k`` ``t``/``b`` for text/binary) and its
  epoch and last offset in the hash ``{prefix}:history:{room}:meta``. One Lua script gives a
  message its offset, appends it (``XADD ... MAXLEN``, then ``XTRIM ... MINID`` for the age bound)
  and publishes it, so offsets and delivery order are the same on every node; every node (the
  origin too) delivers history messages from the subscription. Recovery reads the last
  ``latest - since`` entries with ``XREVRANGE`` (offsets are consecutive). A missing meta hash
  (never used, expired after ``max_age`` of silence, or a flushed or restarted Redis without
  persistence) starts a new epoch, so a client's old position is reported as not recoverable.
  The byte bound of :class:`~trionos.HistoryBounds` applies to the in-memory history only.
  **While Redis is unreachable a room with history cannot give out positions:** ``broadcast``
  raises :class:`~trionos.BrokerError` (the message reaches nobody, not even local members) and
  ``join_with_history`` raises it too (the client joins nothing).
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
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import trio

try:
    import coredis
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import RedisError
    from coredis.retry import CompositeRetryPolicy, ExponentialBackoffRetryPolicy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("trionos.RedisBroker needs coredis: pip install 'trionos[redis]'") from exc

from ._broker import (
    BrokerSink,
    Member,
    decode_envelope,
    decode_history_envelope,
    decode_member,
    encode_history_head,
    encode_member,
    envelope_origin,
    is_history_envelope,
    new_node_id,
    single_start_error,
)
from ._errors import BrokerError
from ._frames import OP_BINARY, OP_TEXT, encode_frame
from ._history import HistoryBounds, HistoryEntry, Position, Recovery
from ._metrics import Metrics

__all__ = ["RedisBroker"]

logger = logging.getLogger("trionos.redis")

#: What a Redis operation raises when Redis is away, slow or restarting: retried or given up on.
#: (coredis lets anyio's stream errors through when a connection breaks under a request.)
_TRANSIENT: tuple[type[Exception], ...] = (
    RedisError,
    TimeoutError,
    trio.TooSlowError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)

#: Start-up errors worth retrying until ``connect_timeout``: Redis is not there (yet).
_RETRYABLE_AT_START: tuple[type[Exception], ...] = (
    RedisConnectionError,
    TimeoutError,
    trio.TooSlowError,
    OSError,
)
#: Raise the join counter (KEYS[1]) to at least ARGV[1]; Redis has no atomic "max" of its own.
_RAISE_COUNTER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""
#: Start a room's history (a new epoch) when its meta hash is missing. KEYS: meta, stream.
#: ARGV[1]: a fresh epoch; ARGV[2]: the age bound in ms (0: none). Shared by both scripts below.
_HISTORY_START = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'ms', 0)
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = tonumber(ARGV[2])
"""
#: Give a message its offset, keep it and publish it, in one step. ARGV[3]: payload; ARGV[4]: the
#: JSON member prefix that stamps the offset ('' for none); ARGV[5]: excluded identity; ARGV[6]:
#: max messages; ARGV[7]: channel; ARGV[8]: envelope head; ARGV[9]: 't' or 'b'. Returns {epoch, offset}.
_HISTORY_APPEND = _HISTORY_START + """
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local payload = ARGV[3]
if ARGV[4] ~= '' then
  if payload == '{}' then payload = '{' .. ARGV[4] .. offset .. '}'
  else payload = string.sub(payload, 1, -2) .. ',' .. ARGV[4] .. offset .. '}' end
end
local last = tonumber(redis.call('HGET', KEYS[1], 'ms') or '0')
if ms < last then ms = last end
redis.call('HSET', KEYS[1], 'ms', ms)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], ms .. '-' .. offset, 'p', payload, 'x', ARGV[5], 'k', ARGV[9])
if age > 0 then
  redis.call('XTRIM', KEYS[2], 'MINID', math.max(0, ms - age) .. '-0')
  redis.call('PEXPIRE', KEYS[1], age)
  redis.call('PEXPIRE', KEYS[2], age)
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. epoch .. '\\n' .. offset .. '\\n' .. payload)
return {epoch, offset}
"""
#: What a client at (ARGV[3] epoch, ARGV[4] offset) missed. Returns {epoch, last offset, entries
#: newest first}: the last (last - offset) entries, or all of them from another epoch.
_HISTORY_RECOVER = _HISTORY_START + """
if age > 0 then redis.call('XTRIM', KEYS[2], 'MINID', math.max(0, ms - age) .. '-0') end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local n = tonumber(ARGV[4])
local count = last
if ARGV[3] == epoch and n >= 0 and n <= last then count = last - n end
local entries = {}
if count > 0 then entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count) end
return {epoch, last, entries}
"""
_MISSING: Any = object()
_FIRST_DELAY = 0.05


def _redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _age_ms(bounds: HistoryBounds) -> int:
    """The history's age bound in milliseconds for the scripts (0: none)."""
    return 0 if bounds.max_age is None else max(1, int(bounds.max_age * 1000))


def _power_of_two(n: int) -> bool:
    return n & (n - 1) == 0


class RedisBroker:
    """Connects hubs in several processes or hosts through Redis: ``Hub(broker=RedisBroker(url))``.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL. Nodes that share a Redis and a
    ``prefix`` share rooms. ``node_id`` defaults to a random id (one per process).

    Bounds (seconds unless said otherwise): ``connect_timeout`` (5) for start-up, then a
    :class:`~trionos.BrokerError`; ``operation_timeout`` (2) per Redis operation;
    ``presence_ttl`` (15) after which a silent node's members expire, checked every
    ``heartbeat_interval`` (``presence_ttl / 3``); ``publish_queue_size`` (1024) envelopes wait
    to be published, beyond that they are dropped; ``max_batch`` (256) envelopes per pipeline;
    ``reconnect_max_delay`` (1) caps the delay between reconnection attempts; ``close_timeout``
    (2) bounds the flush and clean-up on shutdown. The module docstring of ``trionos._redis``
    and ``docs/scale-out.md`` describe the failure behaviour.

    Counters: :attr:`published`, :attr:`publish_dropped`, :attr:`received`; :attr:`connected`
    says whether the last Redis operation succeeded. A broker runs once.
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
        #: Envelopes published to Redis.
        self.published = 0
        #: Envelopes dropped: queue full, or Redis unreachable.
        self.publish_dropped = 0
        #: Envelopes from other nodes handed to the hub.
        self.received = 0
        #: Whether the last Redis operation succeeded.
        self.connected = False

        self._own = self.node_id.encode()
        self._all_channel = f"{prefix}:all".encode()
        self._seq_key = f"{prefix}:seq"
        self._nodes_key = f"{prefix}:nodes"
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, bytes]](publish_queue_size)
        self._client: Any = None
        self._started = False
        self._start_error: BaseException | None = None
        # Rooms with local members: channel -> room (the reader maps channels back with it).
        self._channel_rooms: dict[bytes, str] = {}
        self._room_channels: dict[str, bytes] = {}
        self._subscribed: set[bytes] = set()
        # Presence: what should be registered (local join order) and what is.
        self._desired: dict[tuple[str, str], str | None] = {}
        self._registered: dict[tuple[str, str], bytes] = {}
        self._registered_rooms: set[str] = set()
        # The join sequence number of each registered membership, kept across a Redis restart.
        self._seqs: dict[tuple[str, str], int] = {}
        self._generation = 0
        self._synced_generation = 0
        self._lost = False
        self._changed = trio.Event()
        self._synced = trio.Event()

    def __repr__(self) -> str:
        return f"<trionos.RedisBroker {self.node_id} {_redact(self.url)} prefix={self.prefix!r}>"

    # --- keys -----------------------------------------------------------------------------------

    def _channel(self, room: str) -> bytes:
        return f"{self.prefix}:room:{room}".encode()

    def _presence_key(self, room: str) -> str:
        return f"{self.prefix}:presence:{room}"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def _node_rooms_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:rooms"

    # --- what the hub calls (synchronous, never blocks) -----------------------------------------

    def publish(self, room: str | None, envelope: bytes) -> None:
        """Queue ``envelope`` for the room's channel (None: all); drop it when the queue is full."""
        channel = self._all_channel if room is None else self._room_channels.get(room) or self._channel(room)
        try:
            self._send.send_nowait((channel, envelope))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped(1)
            if _power_of_two(self.publish_dropped):
                logger.warning(
                    "publish queue full (%d) or closed: %d publications dropped so far",
                    self.publish_queue_size,
                    self.publish_dropped,
                )

    def open_room(self, room: str) -> None:
        """The room got its first local member: subscribe to its channel."""
        channel = self._channel(room)
        self._room_channels[room] = channel
        self._channel_rooms[channel] = room
        self._wake()

    def close_room(self, room: str) -> None:
        """The room has no local member any more: unsubscribe (messages still in flight are ignored)."""
        channel = self._room_channels.pop(room, None)
        if channel is not None:
            del self._channel_rooms[channel]
            self._wake()

    def add_member(self, room: str, client_id: str, name: str | None) -> None:
        """Register a local membership in the shared presence (by the syncer, in join order)."""
        self._desired[(room, client_id)] = name
        self._wake()

    def remove_member(self, room: str, client_id: str) -> None:
        """Remove a local membership from the shared presence."""
        if self._desired.pop((room, client_id), _MISSING) is not _MISSING:
            self._wake()

    def _wake(self) -> None:
        self._generation += 1
        self._changed.set()

    async def presence(self, room: str) -> list[Member] | None:
        """Every node's records for ``room``, once this node's pending changes are in Redis.

        Returns None, without waiting, while Redis is unreachable, and None after
        ``operation_timeout`` if Redis does not answer: the hub then lists its local members.
        """
        client = self._client
        if client is None or not self.connected:
            await trio.lowlevel.checkpoint()
            return None
        try:
            with trio.fail_after(self.operation_timeout):
                target = self._generation
                while self._synced_generation < target:
                    await self._synced.wait()
                rows = await client.zrange(self._presence_key(room), 0, -1, withscores=True)
        except _TRANSIENT as exc:
            self._set_connected(False, exc)
            return None
        return list(self._decode_rows(room, rows))

    @staticmethod
    def _decode_rows(room: str, rows: Iterable[Any]) -> Iterable[Member]:
        for data, score in rows:
            try:
                yield decode_member(room, data, int(score))
            except BrokerError as exc:
                logger.warning("ignoring a presence record: %s", exc)

    # --- lifetime -------------------------------------------------------------------------------

    async def run(
        self, sink: BrokerSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, subscribe and register this node, then serve ``sink`` until cancelled.

        Raises :class:`~trionos.BrokerError` if Redis does not answer within ``connect_timeout``.
        Cancellation after start-up is an orderly stop, bounded by ``close_timeout``: the tasks
        end, the queued publications are flushed, this node's records are removed, and the
        connections are closed.
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
                        await self._heartbeat_once(client)
                        self._client = client
                        self.connected = True
                        session.deadline = math.inf
                        session.shield = True
                        try:
                            with tasks:
                                async with trio.open_nursery() as nursery:
                                    nursery.start_soon(self._read, pubsub, sink)
                                    nursery.start_soon(self._publish_loop, client)
                                    nursery.start_soon(self._sync_loop, client, pubsub)
                                    nursery.start_soon(self._heartbeat_loop, client)
                                    nursery.start_soon(self._reap_loop, client, sink)
                                    logger.info("node %s joined Redis at %s", self.node_id, _redact(self.url))
                                    task_status.started(stop)
                        finally:
                            self._client = None
                            self.connected = False
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
            if error is not None and not isinstance(error, _RETRYABLE_AT_START):
                raise BrokerError(f"Redis at {_redact(self.url)} refused the connection{detail}") from error
            raise BrokerError(
                f"cannot reach Redis at {_redact(self.url)} within {self.connect_timeout:g} s{detail}"
            ) from error

    def _new_client(self) -> Any:
        return coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=self.operation_timeout,
            client_name=f"trionos-{self.node_id}",
        )

    def _retry_policy(self) -> CompositeRetryPolicy:
        # coredis' default backoff grows to 16 s and never resets: cap it, so that a restarted
        # Redis is found again within reconnect_max_delay.
        return CompositeRetryPolicy(
            ExponentialBackoffRetryPolicy(
                (RedisConnectionError,),
                retries=None,
                base_delay=_FIRST_DELAY,
                max_delay=self.reconnect_max_delay,
                jitter=True,
            ),
            ExponentialBackoffRetryPolicy(
                (TimeoutError,),
                retries=None,
                base_delay=_FIRST_DELAY,
                max_delay=self.reconnect_max_delay,
                jitter=True,
            ),
        )

    async def _wait_until_reachable(self, client: Any, startup: trio.CancelScope) -> None:
        """PING until Redis answers; the ``startup`` scope's deadline bounds the wait."""
        delay = _FIRST_DELAY
        while True:
            try:
                with trio.fail_after(self.operation_timeout):
                    await client.ping()
                return
            except _RETRYABLE_AT_START as exc:
                self._start_error = exc
            except RedisError as exc:  # refused (authentication, ...): retrying cannot help
                self._start_error = exc
                startup.cancel()
            await trio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)

    def _dropped(self, count: int) -> None:
        self.publish_dropped += count
        self.metrics.broker_publish_dropped += count

    def _set_connected(self, ok: bool, error: BaseException | None = None) -> None:
        if ok and not self.connected:
            self.metrics.broker_reconnects += 1
            logger.info("Redis at %s is reachable again", _redact(self.url))
        elif not ok and self.connected:
            logger.warning(
                "Redis at %s is unreachable (%s): local delivery goes on, publications are dropped",
                _redact(self.url),
                error or "unknown error",
            )
        self.connected = ok

    async def _close(self, client: Any) -> None:
        """Flush what is queued and remove this node's records (bounded by the session's deadline)."""
        self._send.close()
        batch = []
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        try:
            if batch:
                await self._publish_batch(client, batch)
            await self._deregister(client)
        except _TRANSIENT as exc:
            logger.warning("could not remove node %s from Redis on shutdown: %s", self.node_id, exc)
        else:
            logger.info("node %s left Redis", self.node_id)

    async def _deregister(self, client: Any) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for (room, _), member in self._registered.items():
                pipe.zrem(self._presence_key(room), [member])
            pipe.delete([self._node_rooms_key(self.node_id), self._node_key(self.node_id)])
            pipe.srem(self._nodes_key, [self.node_id])

    # --- reader ---------------------------------------------------------------------------------

    async def _read(self, pubsub: Any, sink: BrokerSink) -> None:
        own, all_channel, rooms = self._own, self._all_channel, self._channel_rooms
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue  # subscription acknowledgements
            data = message["data"]
            channel = message["channel"]
            if is_history_envelope(data):
                # Every node delivers history messages from here, its own included: Redis gave
                # them their offsets in this order.
                self._read_history(channel, data, sink)
                continue
            if envelope_origin(data) == own:
                continue
            if channel == all_channel:
                room = None
            else:
                room = rooms.get(channel)
                if room is None:
                    continue  # in flight when the room's last local member left
            try:
                envelope = decode_envelope(data)
            except BrokerError as exc:
                logger.warning("ignoring a message on %r: %s", channel, exc)
                continue
            self.received += 1
            sink.deliver_remote(room, envelope.frame, envelope.exclude)

    def _read_history(self, channel: bytes, data: bytes, sink: BrokerSink) -> None:
        room = self._channel_rooms.get(channel)
        if room is None:
            return
        try:
            envelope = decode_history_envelope(data)
        except BrokerError as exc:
            logger.warning("ignoring a message on %r: %s", channel, exc)
            return
        self.received += 1
        frame = encode_frame(OP_BINARY if envelope.binary else OP_TEXT, envelope.payload)
        sink.deliver_history(room, frame, envelope.exclude, envelope.offset)

    # --- history --------------------------------------------------------------------------------

    def _history_keys(self, room: str) -> list[str]:
        stream = f"{self.prefix}:history:{room}"
        return [f"{stream}:meta", stream]

    async def _history_call(self, script: str, room: str, args: list[Any]) -> Any:
        client = self._client
        if client is None or not self.connected:
            await trio.lowlevel.checkpoint()
            raise BrokerError(f"room {room!r} keeps its history in Redis, which is unreachable")
        try:
            with trio.fail_after(self.operation_timeout):
                return await client.eval(script, self._history_keys(room), args)
        except _TRANSIENT as exc:
            self._set_connected(False, exc)
            raise BrokerError(
                f"room {room!r} keeps its history in Redis, which did not answer: {exc!r}"
            ) from exc

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
        """Give ``payload`` the room's next offset in Redis, keep it and publish it to every node.

        ``offset_member`` (``'"offset":'``) stamps the offset into a JSON object payload; None
        leaves it as is. ``epoch`` starts the room's history if Redis has none. Raises
        :class:`BrokerError` when Redis is unreachable or does not answer within
        ``operation_timeout``: the message then has no position and was sent to nobody.
        """
        binary = isinstance(payload, bytes)
        age = _age_ms(bounds)
        head = encode_history_head(self.node_id, exclude_id, binary=binary)
        result = await self._history_call(
            _HISTORY_APPEND,
            room,
            [
                epoch,
                age,
                payload,
                offset_member or "",
                exclude_identity or "",
                bounds.max_messages,
                self._room_channels.get(room) or self._channel(room),
                head,
                "b" if binary else "t",
            ],
        )
        self.published += 1
        return Position(result[0].decode(), int(result[1]))

    async def history_recover(
        self, room: str, since: Position | None, identity: str | None, *, bounds: HistoryBounds, epoch: str
    ) -> Recovery:
        """What a client at ``since`` missed in ``room``, read from Redis (see :meth:`History.recover`).

        Waits first until this node's subscriptions are in place, so that every message after
        the answer reaches this node live. Raises :class:`BrokerError` as :meth:`history_append`.
        """
        with trio.move_on_after(self.operation_timeout):
            target = self._generation
            while self._synced_generation < target:
                await self._synced.wait()
        age = _age_ms(bounds)
        since_epoch, since_offset = ("", -1) if since is None else (since.epoch, since.offset)
        current, last, rows = await self._history_call(
            _HISTORY_RECOVER, room, [epoch, age, since_epoch, since_offset]
        )
        current = current.decode()
        position = Position(current, int(last))
        if since is None:
            return Recovery(position, (), True)
        entries = []
        for entry_id, fields in reversed(rows):
            ms, offset = entry_id.split(b"-")
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            opcode = OP_BINARY if values.get(b"k") == b"b" else OP_TEXT
            excluded = values.get(b"x") or None
            entries.append(
                HistoryEntry(
                    int(offset),
                    encode_frame(opcode, values.get(b"p", b"")),
                    excluded.decode() if excluded else None,
                    int(ms) / 1000,
                )
            )
        same = since.epoch == current and 0 <= since.offset <= position.offset
        first = entries[0].offset if entries else position.offset + 1
        complete = same and since.offset >= first - 1
        after = since.offset if same else 0
        kept = tuple(e for e in entries if e.offset > after and (identity is None or e.exclude != identity))
        return Recovery(position, kept, complete)

    # --- publisher ------------------------------------------------------------------------------

    async def _publish_loop(self, client: Any) -> None:
        receive = self._receive
        while True:
            batch = [await receive.receive()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            if not await self._publish_batch(client, batch):
                await self._wait_for_redis(client)

    async def _publish_batch(self, client: Any, batch: list[tuple[bytes, bytes]]) -> bool:
        try:
            with trio.fail_after(self.operation_timeout):
                async with client.pipeline(transaction=False) as pipe:
                    for channel, envelope in batch:
                        pipe.publish(channel, envelope)
        except _TRANSIENT as exc:
            self._dropped(len(batch))
            self._set_connected(False, exc)
            return False
        self.published += len(batch)
        self._set_connected(True)
        return True

    async def _wait_for_redis(self, client: Any) -> None:
        """Drop what is queued until Redis answers a PING again (delays capped)."""
        delay = _FIRST_DELAY
        while True:
            await trio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)
            while True:
                try:
                    self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                self._dropped(1)
            try:
                with trio.fail_after(self.operation_timeout):
                    await client.ping()
            except _TRANSIENT:
                continue
            self._set_connected(True)
            return

    # --- syncer: subscriptions and presence records ----------------------------------------------

    async def _sync_loop(self, client: Any, pubsub: Any) -> None:
        delay = _FIRST_DELAY
        while True:
            while self._synced_generation == self._generation and not self._lost:
                await self._changed.wait()
            self._changed = trio.Event()
            target = self._generation
            try:
                with trio.fail_after(self.operation_timeout):
                    await self._sync_once(client, pubsub)
            except _TRANSIENT as exc:
                self._set_connected(False, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            delay = _FIRST_DELAY
            self._synced_generation = target
            self._synced.set()
            self._synced = trio.Event()

    async def _sync_once(self, client: Any, pubsub: Any) -> None:
        if self._lost:
            # Redis lost our records (restarted empty, or we were reaped): register them again,
            # under their original sequence numbers, so the join order survives a restart.
            self._lost = False
            self._registered.clear()
            self._registered_rooms.clear()
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

        adds = [(key, name) for key, name in self._desired.items() if key not in self._registered]
        removes = [(key, member) for key, member in self._registered.items() if key not in self._desired]
        if not adds and not removes:
            return
        fresh = [key for key, _ in adds if key not in self._seqs]
        known = max((self._seqs[key] for key, _ in adds if key in self._seqs), default=0)
        if adds:
            async with client.pipeline(transaction=False) as pipe:
                if known:  # the counter must not hand out numbers we still hold
                    pipe.eval(_RAISE_COUNTER, [self._seq_key], [known])
                last = pipe.incrby(self._seq_key, len(fresh))
            first = await last - len(fresh) + 1
            self._seqs.update((key, first + i) for i, key in enumerate(fresh))
        members = [encode_member(self.node_id, client_id, name) for (_, client_id), name in adds]
        rooms_after = {room for (room, _), _ in adds} | {
            room for (room, client_id) in self._registered if (room, client_id) in self._desired
        }
        new_rooms = rooms_after - self._registered_rooms
        gone_rooms = self._registered_rooms - rooms_after
        async with client.pipeline(transaction=False) as pipe:
            if new_rooms:
                pipe.sadd(self._node_rooms_key(self.node_id), list(new_rooms))
            for ((room, client_id), _), member in zip(adds, members, strict=True):
                pipe.zadd(self._presence_key(room), {member: self._seqs[(room, client_id)]})
            for (room, _), member in removes:
                pipe.zrem(self._presence_key(room), [member])
            if gone_rooms:
                pipe.srem(self._node_rooms_key(self.node_id), list(gone_rooms))
        for (key, _), member in zip(adds, members, strict=True):
            self._registered[key] = member
        for key, _ in removes:
            del self._registered[key]
            self._seqs.pop(key, None)
        self._registered_rooms = rooms_after

    # --- heartbeat and reaper -------------------------------------------------------------------

    async def _heartbeat_once(self, client: Any) -> bool:
        """Refresh this node's key; True if its registration had vanished (Redis lost it)."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(self.node_id), b"1", px=max(1, int(self.presence_ttl * 1000)))
            added = pipe.sadd(self._nodes_key, [self.node_id])
        return await added == 1

    async def _heartbeat_loop(self, client: Any) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval)
            try:
                with trio.fail_after(self.operation_timeout):
                    lost = await self._heartbeat_once(client)
            except _TRANSIENT as exc:
                self._set_connected(False, exc)
                continue
            self._set_connected(True)
            if lost:
                logger.warning(
                    "node %s was missing from Redis (restarted, or we were taken for dead): "
                    "registering its members again",
                    self.node_id,
                )
                self._lost = True
                self._changed.set()

    async def _reap_loop(self, client: Any, sink: BrokerSink) -> None:
        while True:
            try:
                with trio.fail_after(self.operation_timeout):
                    expired = await self._reap(client)
            except _TRANSIENT as exc:
                self._set_connected(False, exc)
                expired = []
            for member in expired:
                await sink.member_expired(member)
            await trio.sleep(self.heartbeat_interval)

    async def _reap(self, client: Any) -> list[Member]:
        """Find nodes whose key expired, claim each (one reaper wins), remove and return their records."""
        others = sorted(node for node in await client.smembers(self._nodes_key) if node != self._own)
        if not others:
            return []
        async with client.pipeline(transaction=False) as pipe:
            checks = [pipe.exists([self._node_key(node.decode())]) for node in others]
        expired: list[Member] = []
        for node, check in zip(others, checks, strict=True):
            if await check:
                continue
            node_id = node.decode()
            claim = f"{self.prefix}:reaping:{node_id}"
            ttl_ms = max(1, int(self.presence_ttl * 1000))
            if not await client.set(claim, self._own, condition=coredis.PureToken.NX, px=ttl_ms):
                continue  # another node is reaping it
            rooms = sorted(room.decode() for room in await client.smembers(self._node_rooms_key(node_id)))
            async with client.pipeline(transaction=False) as pipe:
                reads = [pipe.zrange(self._presence_key(room), 0, -1, withscores=True) for room in rooms]
            gone: list[tuple[Member, bytes]] = []
            for room, read in zip(rooms, reads, strict=True):
                for data, score in await read:
                    try:
                        member = decode_member(room, data, int(score))
                    except BrokerError:
                        continue
                    if member.node_id == node_id:
                        gone.append((member, data))
            async with client.pipeline(transaction=False) as pipe:
                for member, data in gone:
                    pipe.zrem(self._presence_key(member.room), [data])
                pipe.delete([self._node_rooms_key(node_id)])
                pipe.srem(self._nodes_key, [node_id])
            logger.info("node %s expired: %d memberships removed", node_id, len(gone))
            expired.extend(sorted((m for m, _ in gone), key=lambda m: m.seq))
        return expired
