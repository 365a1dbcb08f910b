"""Brokers connect hubs in different processes; this module holds what every broker shares.

A :class:`~trionos.Hub` takes a broker: ``Hub(broker=...)``. The broker decides whether the hub
is alone (:class:`~trionos.MemoryBroker`, the default: one process, nothing to install) or one
node among several sharing rooms (:class:`~trionos.RedisBroker`). The hub talks to its broker
through the small :class:`Broker` protocol below, and the broker calls back into the hub through
:class:`BrokerSink`.

This module is pure (no trio, no I/O), so all of it is tested without Redis:

* the **envelope**: what a node publishes for a broadcast. It carries the origin node id (a node
  ignores its own publications), the id of the excluded client (sender filtering across nodes)
  and the WebSocket frame, encoded once at the origin and written as is by every node;
* the **member record**: how a room membership is stored in the shared presence registry;
* :func:`merge_presence`: the room's names in join order, from the registry and the local members.

Envelope layout (all lengths big-endian)::

    version (1 byte, 1) | flags (1 byte, bit 0: an excluded client follows)
    | origin length (2 bytes) | origin (UTF-8)
    | [excluded length (2 bytes) | excluded client id (UTF-8)]
    | frame (the rest)

A message into a room with history travels as a *history envelope* instead. Its head is made by
the origin node (:func:`encode_history_head`); Redis completes it in the same script that gives
the message its offset, so every node, the origin included, delivers history messages in the
order Redis assigned their offsets::

    version (1 byte, 2) | flags (1 byte, bit 0: binary payload, bit 1: an excluded client follows)
    | origin length (2 bytes) | origin | [excluded length (2 bytes) | excluded client id]
    | epoch (ASCII) "\n" offset (decimal) "\n" | payload (the message, offset stamped in)
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ._errors import BrokerError, single_leaf
from ._history import HistoryBounds, Position, Recovery
from ._json import dumps, loads

__all__ = [
    "Broker",
    "BrokerSink",
    "Envelope",
    "HistoryEnvelope",
    "Member",
    "decode_envelope",
    "decode_history_envelope",
    "decode_member",
    "encode_envelope",
    "encode_history_head",
    "encode_member",
    "envelope_origin",
    "is_history_envelope",
    "PresenceDiff",
    "decode_presence_envelope",
    "encode_presence_envelope",
    "is_presence_envelope",
    "merge_members",
    "merge_presence",
    "new_node_id",
    "presence_diff",
]

ENVELOPE_VERSION = 1
HISTORY_ENVELOPE_VERSION = 2
_HAS_EXCLUDE = 0x01
_BINARY = 0x01
_HISTORY_EXCLUDE = 0x02
_HEAD = struct.Struct(">BBH")
_LEN = struct.Struct(">H")
_MAX_ID = 0xFFFF


def new_node_id() -> str:
    """A fresh random node id (16 hex digits)."""
    return secrets.token_hex(8)


# --- envelope ---------------------------------------------------------------------------------------


@attrs.frozen
class Envelope:
    """A broadcast as it travels between nodes: who sent it, whom to skip, and the frame."""

    origin: str
    exclude: str | None
    frame: bytes


def _id_bytes(what: str, value: str) -> bytes:
    data = value.encode()
    if len(data) > _MAX_ID:
        raise BrokerError(f"{what} must be at most {_MAX_ID} bytes in UTF-8, got {len(data)}")
    return data


def encode_envelope(origin: str, exclude: str | None, frame: bytes) -> bytes:
    """The bytes a node publishes for ``frame``, sent by node ``origin`` excluding client ``exclude``."""
    origin_bytes = _id_bytes("a node id", origin)
    if exclude is None:
        return _HEAD.pack(ENVELOPE_VERSION, 0, len(origin_bytes)) + origin_bytes + frame
    exclude_bytes = _id_bytes("a client id", exclude)
    return b"".join(
        (
            _HEAD.pack(ENVELOPE_VERSION, _HAS_EXCLUDE, len(origin_bytes)),
            origin_bytes,
            _LEN.pack(len(exclude_bytes)),
            exclude_bytes,
            frame,
        )
    )


def envelope_origin(data: bytes) -> bytes | None:
    """The origin of an envelope as raw bytes, without decoding the rest (None if malformed).

    A node compares it with its own id to skip its own publications cheaply.
    """
    if len(data) < _HEAD.size:
        return None
    end = _HEAD.size + _LEN.unpack_from(data, 2)[0]
    return data[_HEAD.size : end] if end <= len(data) else None


def _ids(data: bytes, origin_len: int, has_exclude: bool) -> tuple[str, str | None, int]:
    """The origin and excluded client ids after the head, and where the rest starts."""
    pos = _HEAD.size + origin_len
    origin = data[_HEAD.size : pos].decode()
    exclude = None
    if has_exclude:
        (exclude_len,) = _LEN.unpack_from(data, pos)
        exclude = data[pos + _LEN.size : pos + _LEN.size + exclude_len].decode()
        pos += _LEN.size + exclude_len
    return origin, exclude, pos


def decode_envelope(data: bytes) -> Envelope:
    """Parse what :func:`encode_envelope` made; raise :class:`BrokerError` if it is not an envelope."""
    if len(data) < _HEAD.size:
        raise BrokerError(f"malformed envelope: expected at least {_HEAD.size} bytes, got {data!r}")
    version, flags, origin_len = _HEAD.unpack_from(data)
    if version != ENVELOPE_VERSION:
        raise BrokerError(f"malformed envelope: expected version {ENVELOPE_VERSION}, got {version}")
    if flags & ~_HAS_EXCLUDE:
        raise BrokerError(f"malformed envelope: unknown flags {flags:#04x}")
    try:
        origin, exclude, pos = _ids(data, origin_len, bool(flags & _HAS_EXCLUDE))
    except (struct.error, UnicodeDecodeError) as exc:
        raise BrokerError(f"malformed envelope: {exc}; head {data[:32]!r}") from None
    if pos > len(data):
        raise BrokerError(f"malformed envelope: {len(data)} bytes, shorter than its header says ({pos})")
    return Envelope(origin, exclude, data[pos:])


# --- history envelope -------------------------------------------------------------------------------


@attrs.frozen
class HistoryEnvelope:
    """A message of a room with history, as every node receives it from Redis."""

    origin: str
    exclude: str | None
    epoch: str
    offset: int
    #: The message as first sent (offset stamped in): UTF-8 text, or bytes when ``binary``.
    payload: bytes
    binary: bool


def encode_history_head(origin: str, exclude: str | None, *, binary: bool) -> bytes:
    """The head of a history envelope (Redis appends ``epoch\noffset\npayload``)."""
    origin_bytes = _id_bytes("a node id", origin)
    flags = _BINARY if binary else 0
    tail = b""
    if exclude is not None:
        flags |= _HISTORY_EXCLUDE
        exclude_bytes = _id_bytes("a client id", exclude)
        tail = _LEN.pack(len(exclude_bytes)) + exclude_bytes
    return _HEAD.pack(HISTORY_ENVELOPE_VERSION, flags, len(origin_bytes)) + origin_bytes + tail


def is_history_envelope(data: bytes) -> bool:
    """Whether ``data`` is a history envelope (cheap: its first byte)."""
    return data[:1] == b"\x02"


def decode_history_envelope(data: bytes) -> HistoryEnvelope:
    """Parse a history envelope; raise :class:`BrokerError` if it is not one."""
    if len(data) < _HEAD.size or data[0] != HISTORY_ENVELOPE_VERSION:
        raise BrokerError(f"malformed history envelope: head {data[:32]!r}")
    _, flags, origin_len = _HEAD.unpack_from(data)
    if flags & ~(_BINARY | _HISTORY_EXCLUDE):
        raise BrokerError(f"malformed history envelope: unknown flags {flags:#04x}")
    try:
        origin, exclude, pos = _ids(data, origin_len, bool(flags & _HISTORY_EXCLUDE))
        epoch_end = data.index(b"\n", pos)
        offset_end = data.index(b"\n", epoch_end + 1)
        epoch = data[pos:epoch_end].decode("ascii")
        offset = int(data[epoch_end + 1 : offset_end])
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise BrokerError(f"malformed history envelope: {exc}; head {data[:32]!r}") from None
    return HistoryEnvelope(origin, exclude, epoch, offset, data[offset_end + 1 :], bool(flags & _BINARY))


# --- presence ---------------------------------------------------------------------------------------


@attrs.frozen
class Member:
    """One room membership: in a hub's presence, in the cluster-wide registry, and in a diff.

    What :meth:`Hub.presence_state <trionos.Hub.presence_state>` lists and what a
    :class:`PresenceDiff` carries. A hub's ``on_member_expired`` callback receives the records of
    members whose node stopped refreshing its presence.

    Attributes:
        room: the room.
        node_id: the node the member is (or was) connected to.
        client_id: the member's connection id on that node.
        name: the client's name when it joined, or None.
        seq: orders joins across every node (a shared counter; 0 where it is not known yet, as
            in a diff of a join).
        meta: the member's presence metadata (a JSON object, decoded; empty without any),
            bounded by the hub's ``max_presence_meta_bytes``.
    """

    room: str
    node_id: str
    client_id: str
    name: str | None
    seq: int = 0
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


def encode_member(node_id: str, client_id: str, name: str | None, meta_json: str = "") -> bytes:
    """The registry key of a membership within one room (the same bytes on every write).

    ``meta_json`` is the member's metadata as compact JSON text ('' or ``{}``: none, and the
    record keeps the three-item form older nodes read).
    """
    if meta_json in ("", "{}"):
        return dumps([node_id, client_id, name]).encode()
    return f"{dumps([node_id, client_id, name])[:-1]},{meta_json}]".encode()


def decode_member(room: str, data: bytes, seq: int) -> Member:
    """Parse what :func:`encode_member` made; raise :class:`BrokerError` for anything else."""
    try:
        record = loads(data)
        node_id, client_id, name, *rest = record
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"malformed presence record in room {room!r}: {data[:80]!r}") from exc
    meta = rest[0] if len(rest) == 1 else {}
    if not (
        isinstance(node_id, str)
        and isinstance(client_id, str)
        and isinstance(name, str | None)
        and isinstance(meta, dict)
        and len(rest) <= 1
    ):
        raise BrokerError(f"malformed presence record in room {room!r}: {data[:80]!r}")
    return Member(room, node_id, client_id, name, seq, meta)


def merge_members(node_id: str, local: Sequence[Member], registry: Iterable[Member] | None) -> list[Member]:
    """A room's members in join order, across nodes.

    ``local`` is this node's members in local join order: they are the truth for this node (a
    record of ours that is no longer local is stale and skipped, and a local member's name and
    metadata are its current ones; a local member not yet in the registry comes last, in local
    order). ``registry`` is every node's records (``None`` when the registry cannot be read: the
    local members alone). Records are ordered by ``seq``.
    """
    by_id = {member.client_id: member for member in local}
    merged: list[Member] = []
    seen: set[str] = set()
    for record in sorted(registry or (), key=lambda m: (m.seq, m.node_id, m.client_id)):
        if record.node_id != node_id:
            merged.append(record)
        elif record.client_id in by_id and record.client_id not in seen:
            seen.add(record.client_id)
            merged.append(attrs.evolve(by_id[record.client_id], seq=record.seq))
    merged.extend(member for member in local if member.client_id not in seen)
    return merged


def merge_presence(
    node_id: str, local: Iterable[tuple[str, str | None]], registry: Iterable[Member] | None
) -> list[str]:
    """The names in a room in join order, across nodes (see :func:`merge_members`).

    ``local`` is this node's members as ``(client_id, name)`` in local join order. Members
    without a name are left out.
    """
    members = [Member("", node_id, client_id, name) for client_id, name in local]
    return [m.name for m in merge_members(node_id, members, registry) if m.name is not None]


# --- presence diffs ---------------------------------------------------------------------------------


@attrs.frozen
class PresenceDiff:
    """What changed in a room's presence: the members who joined, left, or changed metadata.

    What a presence watcher (:meth:`Hub.watch_presence <trionos.Hub.watch_presence>`) receives,
    the way Phoenix Presence sends ``presence_diff``. A member whose metadata changed is in
    ``updates`` with its new metadata.

    Attributes:
        room: the room.
        joins: the members who joined.
        leaves: the members who left, or whose node died.
        updates: the members whose metadata changed (with the new metadata).
    """

    room: str
    joins: tuple[Member, ...] = ()
    leaves: tuple[Member, ...] = ()
    updates: tuple[Member, ...] = ()


PRESENCE_ENVELOPE_VERSION = 3
_PRESENCE_KINDS = ("join", "leave", "update")


def encode_presence_envelope(origin: str, kind: str, member: Member) -> bytes:
    """The bytes a node publishes into a room's channel for one presence change.

    Layout: the envelope head (version 3, no flags, the origin node) then a JSON array
    ``[kind, node_id, client_id, name, seq, meta]``; the room is the channel's.
    """
    origin_bytes = _id_bytes("a node id", origin)
    body = dumps([kind, member.node_id, member.client_id, member.name, member.seq, member.meta])
    return _HEAD.pack(PRESENCE_ENVELOPE_VERSION, 0, len(origin_bytes)) + origin_bytes + body.encode()


def is_presence_envelope(data: bytes) -> bool:
    """Whether ``data`` is a presence envelope (cheap: its first byte)."""
    return data[:1] == b"\x03"


def decode_presence_envelope(room: str, data: bytes) -> PresenceDiff:
    """Parse what :func:`encode_presence_envelope` made into a one-member diff of *room*.

    Raises:
        BrokerError: *data* is not a presence envelope.
    """
    if len(data) < _HEAD.size or data[0] != PRESENCE_ENVELOPE_VERSION:
        raise BrokerError(f"malformed presence envelope: head {data[:32]!r}")
    origin_len = _HEAD.unpack_from(data)[2]
    try:
        kind, node_id, client_id, name, seq, meta = loads(data[_HEAD.size + origin_len :])
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"malformed presence envelope: {exc}; head {data[:32]!r}") from None
    if not (
        kind in _PRESENCE_KINDS
        and isinstance(node_id, str)
        and isinstance(client_id, str)
        and isinstance(name, str | None)
        and isinstance(seq, int)
        and isinstance(meta, dict)
    ):
        raise BrokerError(f"malformed presence envelope: {data[:80]!r}")
    member = Member(room, node_id, client_id, name, seq, meta)
    return presence_diff(kind, member)


def presence_diff(kind: str, member: Member) -> PresenceDiff:
    """The diff of one change: *kind* is ``"join"``, ``"leave"`` or ``"update"``."""
    if kind == "join":
        return PresenceDiff(member.room, joins=(member,))
    if kind == "leave":
        return PresenceDiff(member.room, leaves=(member,))
    return PresenceDiff(member.room, updates=(member,))


def single_start_error(group: BaseExceptionGroup[BaseException]) -> BrokerError | None:
    """The :class:`BrokerError` a group wraps, if it wraps exactly that and nothing else.

    Nurseries wrap what fails in them; a hub uses this to raise a broker's start-up failure as it
    is, so that ``except trionos.BrokerError`` works around ``async with Hub(broker=...)``.
    """
    leaf = single_leaf(group)
    return leaf if isinstance(leaf, BrokerError) else None


# --- the protocol between a hub and its broker ---------------------------------------------------


class BrokerSink(Protocol):
    """What a broker calls on its hub (the hub implements it)."""

    def deliver_remote(self, room: str | None, frame: bytes, exclude: str | None) -> None:
        """Deliver a frame another node published to local members (``room`` None: every client).

        Never blocks: what does not fit in the room's channel is dropped and counted.
        """

    def member_expired(self, member: Member) -> Awaitable[None]:
        """Tell the application that ``member`` vanished with its node."""

    def deliver_history(self, room: str, frame: bytes, exclude: str | None, offset: int) -> None:
        """Deliver a message of a room with history (from any node, this one included), in order.

        Never blocks, like :meth:`deliver_remote`.
        """

    def deliver_presence(self, diff: PresenceDiff) -> None:
        """Deliver a presence change another node published (never blocks)."""


class Broker(Protocol):
    """What a hub needs from a broker. The synchronous methods never block and never fail.

    ``shared`` is False for a broker that connects nothing (the hub then skips every broker call,
    keeping the single-process path as it was). :class:`~trionos.RedisBroker` is the shared one;
    ``docs/scale-out.md`` describes what it does with each call.

    Attributes:
        node_id: this node's id, unique among the nodes that share rooms.
        shared: whether other nodes can see what this broker publishes.
    """

    node_id: str
    shared: bool

    # ``task_status`` is a ``trio.TaskStatus[None]``; this module stays pure (it never imports trio).
    async def run(self, sink: BrokerSink, *, task_status: Any) -> None:
        """Connect, then serve *sink* until cancelled (the ``nursery.start`` convention).

        Args:
            sink: the hub, which the broker delivers to.
            task_status: ``started()`` is called once the broker is connected.

        Raises:
            BrokerError: the broker cannot connect within its start-up bound.
        """
        ...

    def publish(self, room: str | None, envelope: bytes) -> None:
        """Send *envelope* to the other nodes' members of *room* (None: every client); never blocks.

        Args:
            room: the room, or None for ``broadcast_all``.
            envelope: the broadcast as the hub encoded it for other nodes (origin, excluded client, frame).
        """
        ...

    def open_room(self, room: str) -> None:
        """*room* got its first local member: start receiving what other nodes publish into it."""
        ...

    def close_room(self, room: str) -> None:
        """*room* has no local member any more: stop receiving its traffic."""
        ...

    def add_member(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """Record a local membership in the shared presence (in the background).

        Called again for the same membership when its metadata changes: the record is replaced,
        keeping its place in the join order.

        Args:
            room: the room joined.
            client_id: the member's connection id.
            name: the member's name when it joined, or None.
            meta: the member's presence metadata (JSON-able, within the hub's byte bound).
        """
        ...

    def remove_member(self, room: str, client_id: str) -> None:
        """Remove a local membership from the shared presence (in the background)."""
        ...

    async def presence(self, room: str) -> list[Member] | None:
        """Every node's members of *room*.

        Returns:
            The records in join order, or None when the shared presence cannot be read (the hub
            then lists its local members).
        """
        ...

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
        """Give *payload* the room's next offset, keep it, and deliver it to every node in that order.

        Called only when ``shared`` is True and the room keeps a history: every node, this one
        included, then receives it through :meth:`BrokerSink.deliver_history`.

        Args:
            room: the room.
            payload: the message as sent (text or bytes).
            exclude_id: the connection id of the member that does not receive it live.
            exclude_identity: the identity that does not receive it in a replay.
            bounds: the room's history bounds.
            offset_member: ``'"offset":'`` stamps the offset into a JSON object payload
                (``'"epoch":'`` newline ``'"offset":'`` stamps the epoch before it); None leaves
                the payload as is.
            epoch: the epoch to start the room's history with if it has none.

        Returns:
            The message's position.

        Raises:
            BrokerError: the shared history cannot be reached: the message was sent to nobody.
        """
        ...

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
        """What a client missed in *room* since *since*, or the room's last *last* messages.

        Called only when ``shared`` is True. Once it returns, every later message of the room
        must reach this node through :meth:`BrokerSink.deliver_history`.

        Args:
            room: the room.
            since: the client's last position; None reads nothing (the latest position only),
                unless *last* is given.
            identity: entries that excluded this identity are left out (with *since* only).
            bounds: the room's history bounds.
            epoch: the epoch to start the room's history with if it has none.
            last: read the room's last *last* messages instead (oldest first; *since* is None).

        Returns:
            The room's latest position, the entries, and whether they are all that was asked.

        Raises:
            BrokerError: the shared history cannot be reached.
        """
        ...
