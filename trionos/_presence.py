"""The hub's presence: each member's metadata, its byte bound, and the watchers of diffs.

Phoenix Presence is the model: a member joins a room with metadata (a JSON object: a status, a
device, a cursor), may change it, and every change reaches whoever watches the room as a
:class:`~trionos.PresenceDiff` of joins, leaves and updates.

Where the changes come from, on one node:

* this node's joins, updates and leaves (:meth:`Hub.join <trionos.Hub.join>`,
  :meth:`Hub.update_presence <trionos.Hub.update_presence>`, :meth:`Hub.leave
  <trionos.Hub.leave>` and a client's unregistering), given to the watchers at once;
* with a shared broker, the other nodes' changes in the rooms this node has members in (each
  node publishes its own into the room's channel) and the leaves of members of a node that died
  (published by the node that reaped them).

No trio here and nothing awaits: the watchers are called synchronously, and the broker's methods
that this calls never block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._broker import Broker, Member, PresenceDiff, encode_presence_envelope, presence_diff
from ._json import dumps, loads

__all__ = ["PresenceBook", "PresenceWatcher"]

logger = logging.getLogger("trionos.hub")

#: What :meth:`Hub.watch_presence <trionos.Hub.watch_presence>` takes: called with each diff.
PresenceWatcher = Callable[[PresenceDiff], None]

_EMPTY: Mapping[str, Any] = {}


class PresenceBook:
    """The metadata of this node's members, and the watchers their changes are reported to.

    Bound: one metadata object per membership that has one, each at most ``max_meta_bytes``
    bytes of JSON (a membership without metadata costs nothing here).

    Args:
        broker: the hub's broker (changes are published through it when it is shared).
        max_meta_bytes: the largest metadata accepted, in bytes of compact UTF-8 JSON.
    """

    def __init__(self, broker: Broker, max_meta_bytes: int) -> None:
        self._broker = broker
        self._node_id = broker.node_id
        self._shared = broker.shared
        self.max_meta_bytes = max_meta_bytes
        self._meta: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._watchers: list[PresenceWatcher] = []

    def check(self, meta: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The metadata as stored: a copy of *meta* through JSON, within the byte bound.

        Args:
            meta: a mapping with string keys and JSON values, or None (none).

        Returns:
            The decoded copy (a snapshot: changing *meta* later changes nothing here).

        Raises:
            TypeError: *meta* is not a mapping.
            EncodeError: *meta* holds something JSON cannot.
            ValueError: its JSON is longer than ``max_meta_bytes``.
        """
        if meta is None:
            return _EMPTY
        if not isinstance(meta, Mapping):
            raise TypeError(f"presence metadata must be a mapping, got {type(meta).__name__}")
        text = dumps(dict(meta))
        size = len(text.encode())
        if size > self.max_meta_bytes:
            raise ValueError(
                f"presence metadata must be at most {self.max_meta_bytes} bytes of JSON, got {size}"
            )
        copy: Mapping[str, Any] = loads(text)
        return copy

    def meta(self, room: str, client_id: str) -> Mapping[str, Any]:
        """A local member's metadata (empty without any)."""
        return self._meta.get((room, client_id), _EMPTY)

    def member(self, room: str, client_id: str, name: str | None) -> Member:
        """A local member as a presence record (``seq`` 0: its order is the registry's)."""
        return Member(room, self._node_id, client_id, name, 0, self.meta(room, client_id))

    # --- changes --------------------------------------------------------------------------------

    def joined(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """A local client joined *room* with *meta* (already :meth:`check`-ed)."""
        if meta:
            self._meta[(room, client_id)] = meta
        if self._shared:
            self._broker.add_member(room, client_id, name, meta)
        self._changed("join", room, client_id, name)

    def updated(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        """A local member of *room* has new metadata (already :meth:`check`-ed)."""
        if meta:
            self._meta[(room, client_id)] = meta
        else:
            self._meta.pop((room, client_id), None)
        if self._shared:
            self._broker.add_member(room, client_id, name, meta)
        self._changed("update", room, client_id, name)

    def left(self, room: str, client_id: str, name: str | None) -> None:
        """A local member left *room* (or unregistered)."""
        if self._watchers or self._shared:
            self._report("leave", self.member(room, client_id, name))
        self._meta.pop((room, client_id), None)
        if self._shared:
            self._broker.remove_member(room, client_id)

    def expired(self, member: Member) -> None:
        """A member of a node that died was reaped here: every node's watchers learn it left."""
        self._report("leave", member)

    def _changed(self, kind: str, room: str, client_id: str, name: str | None) -> None:
        if self._watchers or self._shared:
            self._report(kind, self.member(room, client_id, name))

    def _report(self, kind: str, member: Member) -> None:
        if self._shared:
            self._broker.publish(member.room, encode_presence_envelope(self._node_id, kind, member))
        if self._watchers:
            self.deliver(presence_diff(kind, member))

    # --- watchers -------------------------------------------------------------------------------

    @contextmanager
    def watch(self, watcher: PresenceWatcher) -> Iterator[None]:
        """Call *watcher* with every diff while the block runs (see :meth:`Hub.watch_presence`)."""
        self._watchers.append(watcher)
        try:
            yield
        finally:
            self._watchers.remove(watcher)

    def deliver(self, diff: PresenceDiff) -> None:
        """Give *diff* to every watcher; what one raises is logged and dropped.

        An isolation boundary: one application callback cannot stop a join, a leave, or the
        broker's reader.
        """
        for watcher in tuple(self._watchers):
            try:
                watcher(diff)
            except Exception:  # one application callback must not break the hub's bookkeeping
                logger.exception("presence watcher %r failed on %r", watcher, diff)
