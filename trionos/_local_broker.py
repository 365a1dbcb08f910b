"""The default broker: a hub alone in its process, with nothing to connect.

:class:`~trionos.RedisBroker` (in :mod:`trionos._redis`) is the shared one; both implement
:class:`~trionos.Broker` (:mod:`trionos._broker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from ._broker import BrokerSink, Member, new_node_id
from ._errors import BrokerError
from ._history import HistoryBounds, Position, Recovery

__all__ = ["LocalBroker"]


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
