"""Who is in which room: pure bookkeeping, no I/O.

Rooms keep their members in join order (``welcome`` lists users that way). A room exists while it
has members: the last leave makes it disappear.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Rooms"]

C = TypeVar("C", bound=Hashable)


class Rooms(Generic[C]):
    """Room membership for clients of any hashable type ``C``."""

    def __init__(self) -> None:
        # dicts keep insertion order, which is join order.
        self._members: dict[str, dict[C, None]] = {}
        self._rooms_of: dict[C, dict[str, None]] = {}

    def join(self, client: C, room: str) -> bool:
        """Add *client* to *room*, creating the room.

        Args:
            client: the client.
            room: the room's name.

        Returns:
            True if it was not a member already.
        """
        members = self._members.setdefault(room, {})
        if client in members:
            return False
        members[client] = None
        self._rooms_of.setdefault(client, {})[room] = None
        return True

    def leave(self, client: C, room: str) -> bool:
        """Remove *client* from *room*; an emptied room disappears.

        Args:
            client: the client.
            room: the room's name.

        Returns:
            True if it was a member.
        """
        members = self._members.get(room)
        if members is None or client not in members:
            return False
        del members[client]
        if not members:
            del self._members[room]
        rooms = self._rooms_of[client]
        del rooms[room]
        if not rooms:
            del self._rooms_of[client]
        return True

    def drop(self, client: C) -> list[str]:
        """Remove *client* from every room.

        Args:
            client: the client.

        Returns:
            The rooms it was in, in the order it joined them.
        """
        rooms = list(self._rooms_of.get(client, ()))
        for room in rooms:
            self.leave(client, room)
        return rooms

    def members(self, room: str) -> list[C]:
        """The members of *room*.

        Args:
            room: the room's name.

        Returns:
            A new list in join order (empty for a room that does not exist).
        """
        return list(self._members.get(room, ()))

    def member_view(self, room: str) -> dict[C, None]:
        """The members of *room*, without a copy.

        Args:
            room: the room's name.

        Returns:
            The live membership dict in join order (do not modify it), or an empty dict.
        """
        return self._members.get(room, {})

    def rooms_view(self, client: C) -> dict[str, None]:
        """The rooms *client* is in, without a copy.

        Args:
            client: the client.

        Returns:
            The live dict of room names in join order (do not modify it), or an empty dict.
        """
        return self._rooms_of.get(client, {})

    def rooms_of(self, client: C) -> list[str]:
        """The rooms *client* is in.

        Args:
            client: the client.

        Returns:
            A new list, in the order it joined them.
        """
        return list(self._rooms_of.get(client, ()))

    def rooms(self) -> list[str]:
        """Every room that has members.

        Returns:
            A new list, in the order the rooms were created.
        """
        return list(self._members)

    def is_member(self, client: C, room: str) -> bool:
        """Whether *client* is in *room*.

        Args:
            client: the client.
            room: the room's name.

        Returns:
            True if it is a member.
        """
        return client in self._members.get(room, ())

    def __len__(self) -> int:
        """The number of rooms that have members."""
        return len(self._members)
