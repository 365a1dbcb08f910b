"""The presence registry of :class:`~trionos.RedisBroker`: who is in which room, on every node.

Each membership is a record in the sorted set ``{prefix}:presence:{room}``, scored by the shared
counter ``{prefix}:seq`` (join order across nodes). Each node keeps the key ``{prefix}:node:{id}``
alive with a TTL (``presence_ttl``) refreshed every ``heartbeat_interval`` and is listed in
``{prefix}:nodes``; ``{prefix}:node:{id}:rooms`` lists the rooms it has records in. A node whose
key expired is reaped by one of the others (a ``SET NX`` claim), which removes its records and
passes each one to the hub's ``on_member_expired`` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from ._broker import BrokerSink, Member, decode_member, encode_member
from ._errors import BrokerError
from ._json import dumps
from ._redis_link import TRANSIENT, Link, coredis

__all__ = ["PresenceRegistry"]

logger = logging.getLogger("trionos.redis")

#: Raise the join counter (KEYS[1]) to at least ARGV[1]; Redis has no atomic "max" of its own.
_RAISE_COUNTER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""


class PresenceRegistry:
    """One node's records in the shared presence: what should be registered, and what is.

    The hub's joins and leaves change what *should* be registered at once (:meth:`add` and
    :meth:`remove`, synchronous); the broker's syncer calls :meth:`sync` to bring Redis in line,
    in join order. :meth:`heartbeat_loop` keeps the node alive and notices when Redis lost its
    records; :meth:`reap_loop` removes the records of dead nodes. Bounds: one record per local
    membership; each Redis step is bounded by the link's ``operation_timeout``.
    """

    def __init__(
        self, link: Link, prefix: str, node_id: str, *, presence_ttl: float, heartbeat_interval: float
    ) -> None:
        self._link = link
        self._prefix = prefix
        self._node_id = node_id
        self._own = node_id.encode()
        self._presence_ttl = presence_ttl
        self._heartbeat_interval = heartbeat_interval
        self._seq_key = f"{prefix}:seq"
        self._nodes_key = f"{prefix}:nodes"
        # What should be registered (local join order, as the encoded record) and what is.
        self._desired: dict[tuple[str, str], bytes] = {}
        self._registered: dict[tuple[str, str], bytes] = {}
        self._registered_rooms: set[str] = set()
        # The join sequence number of each registered membership, kept across a Redis restart.
        self._seqs: dict[tuple[str, str], int] = {}
        #: Whether Redis lost this node's records (restarted empty, or we were reaped): the next
        #: :meth:`sync` registers every local membership again.
        self.lost = False

    # --- keys -----------------------------------------------------------------------------------

    def _presence_key(self, room: str) -> str:
        return f"{self._prefix}:presence:{room}"

    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    def _node_rooms_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}:rooms"

    # --- what should be registered --------------------------------------------------------------

    def add(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """A local membership to register (under ``name``, with ``meta``), or its new metadata.

        A membership registered already is replaced at the next :meth:`sync`, keeping its
        sequence number (its place in the join order).
        """
        meta_json = dumps(meta) if meta else ""
        self._desired[(room, client_id)] = encode_member(self._node_id, client_id, name, meta_json)

    def remove(self, room: str, client_id: str) -> bool:
        """A local membership to remove; False if it was not there (nothing to do)."""
        return self._desired.pop((room, client_id), _MISSING) is not _MISSING

    # --- reading --------------------------------------------------------------------------------

    async def read(self, client: Any, room: str) -> list[Member]:
        """Every node's records for ``room``, in join order (one ``ZRANGE``; errors propagate)."""
        rows = await client.zrange(self._presence_key(room), 0, -1, withscores=True)
        return list(self._decode_rows(room, rows))

    @staticmethod
    def _decode_rows(room: str, rows: Iterable[Any]) -> Iterable[Member]:
        for data, score in rows:
            try:
                yield decode_member(room, data, int(score))
            except BrokerError as exc:
                logger.warning("ignoring a presence record: %s", exc)

    # --- bringing Redis in line -----------------------------------------------------------------

    async def sync(self, client: Any) -> None:
        """Register what was added and remove what was removed since the last call (two pipelines).

        After :attr:`lost`, registers every local membership again, under its original sequence
        number, so that the join order survives a Redis restart. Errors propagate (the syncer
        retries).
        """
        if self.lost:
            self.lost = False
            self._registered.clear()
            self._registered_rooms.clear()
        registered = self._registered
        adds = [(key, record) for key, record in self._desired.items() if registered.get(key) != record]
        # A record replaced by one with new metadata is removed too (its old bytes), not forgotten.
        removes = [(key, record) for key, record in registered.items() if self._desired.get(key) != record]
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
        members = [record for _, record in adds]
        rooms_after = {room for (room, _), _ in adds} | {
            room for (room, client_id) in self._registered if (room, client_id) in self._desired
        }
        new_rooms = rooms_after - self._registered_rooms
        gone_rooms = self._registered_rooms - rooms_after
        async with client.pipeline(transaction=False) as pipe:
            if new_rooms:
                pipe.sadd(self._node_rooms_key(self._node_id), list(new_rooms))
            for ((room, client_id), _), member in zip(adds, members, strict=True):
                pipe.zadd(self._presence_key(room), {member: self._seqs[(room, client_id)]})
            for (room, _), member in removes:
                pipe.zrem(self._presence_key(room), [member])
            if gone_rooms:
                pipe.srem(self._node_rooms_key(self._node_id), list(gone_rooms))
        for key, _ in removes:
            del self._registered[key]
            if key not in self._desired:
                self._seqs.pop(key, None)
        for (key, _), member in zip(adds, members, strict=True):
            self._registered[key] = member
        self._registered_rooms = rooms_after

    async def deregister(self, client: Any) -> None:
        """Remove this node and its records from Redis (on shutdown; errors propagate)."""
        async with client.pipeline(transaction=False) as pipe:
            for (room, _), member in self._registered.items():
                pipe.zrem(self._presence_key(room), [member])
            pipe.delete([self._node_rooms_key(self._node_id), self._node_key(self._node_id)])
            pipe.srem(self._nodes_key, [self._node_id])

    # --- heartbeat and reaper -------------------------------------------------------------------

    async def heartbeat_once(self, client: Any) -> bool:
        """Refresh this node's key; True if its registration had vanished (Redis lost it)."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(self._node_id), b"1", px=max(1, int(self._presence_ttl * 1000)))
            added = pipe.sadd(self._nodes_key, [self._node_id])
        return bool(await added == 1)

    async def heartbeat_loop(self, client: Any, on_lost: Callable[[], None]) -> None:
        """Refresh this node's key every ``heartbeat_interval``; call ``on_lost`` when Redis lost it."""
        link = self._link
        while True:
            await trio.sleep(self._heartbeat_interval)
            try:
                with trio.fail_after(link.operation_timeout):
                    lost = await self.heartbeat_once(client)
            except TRANSIENT as exc:
                link.set_connected(False, exc)
                continue
            link.set_connected(True)
            if lost:
                logger.warning(
                    "node %s was missing from Redis (restarted, or we were taken for dead): "
                    "registering its members again",
                    self._node_id,
                )
                self.lost = True
                on_lost()

    async def reap_loop(self, client: Any, sink: BrokerSink) -> None:
        """Every ``heartbeat_interval``, reap the dead nodes and report their members to ``sink``."""
        link = self._link
        while True:
            try:
                with trio.fail_after(link.operation_timeout):
                    expired = await self.reap(client)
            except TRANSIENT as exc:
                link.set_connected(False, exc)
                expired = []
            for member in expired:
                await sink.member_expired(member)
            await trio.sleep(self._heartbeat_interval)

    async def reap(self, client: Any) -> list[Member]:
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
            claim = f"{self._prefix}:reaping:{node_id}"
            ttl_ms = max(1, int(self._presence_ttl * 1000))
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


_MISSING: Any = object()
