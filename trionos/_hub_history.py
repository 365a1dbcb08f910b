"""The hub's rooms' histories: which rooms keep one and how, and the histories kept in memory.

Settings: ``Hub(history=...)`` is every room's default and ``set_room_history`` overrides it per
room. A hub alone keeps the histories here, in a :class:`~trionos._history.History`; with a
shared broker they are the broker's (see :mod:`trionos._shared_history`) and only the settings
are used here. A codec-encoded message (a JSON object) carries its offset as ``offset_field``:
stamped here in memory, by the broker's append otherwise (the member prefix :meth:`payload`
gives it).

It never reads a clock: the time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._connection import MessageCodec
from ._frames import message_frame
from ._history import History, HistoryBounds, Position, Recovery, stamp_members
from ._json import dumps as dumps_json
from ._metrics import Metrics

__all__ = ["HubHistory", "history_bounds"]


def history_bounds(value: HistoryBounds | bool | None) -> HistoryBounds | None:
    """The history bounds *value* stands for (True: the defaults; None or False: no history)."""
    if value is True:
        return HistoryBounds()
    if value is None or value is False:
        return None
    if isinstance(value, HistoryBounds):
        return value
    raise TypeError(f"history must be a HistoryBounds, True, False or None, got {value!r}")


class HubHistory:
    """Per-room history settings, and the rooms' histories when the hub keeps them in memory.

    Bounds: those of each room's :class:`~trionos.HistoryBounds` (``max_rooms`` and
    ``max_total_bytes`` of the default bounds cap the rooms with a history and their bytes in all).

    Args:
        default: every room's history unless set per room (see :func:`history_bounds`).
        offset_field: the member a codec-encoded message carries its offset in (None: none).
        new_epoch: makes a fresh epoch.
        metrics: counts appends, trims, replays and recoveries.
        epoch_field: the member such a message carries its epoch in, before the offset (None:
            none; only with an ``offset_field``).
    """

    def __init__(
        self,
        default: HistoryBounds | bool | None,
        offset_field: str | None,
        new_epoch: Callable[[], str],
        metrics: Metrics,
        epoch_field: str | None = None,
    ) -> None:
        self._default = history_bounds(default)
        self.offset_field = offset_field
        self.epoch_field = None if offset_field is None else epoch_field
        self.new_epoch = new_epoch
        self._metrics = metrics
        self._rooms: dict[str, HistoryBounds | None] = {}
        self._memory = History(self._default or HistoryBounds(), new_epoch=new_epoch)
        self._dropped = 0  # the memory's rooms_dropped already counted in the metrics

    def _count(self, trimmed: int = 0) -> None:
        """Add what the memory history trimmed and forgot to the metrics."""
        dropped = self._memory.rooms_dropped
        self._metrics.history_rooms_dropped += dropped - self._dropped
        self._dropped = dropped
        self._metrics.history_trimmed += trimmed

    @property
    def memory_bytes(self) -> int:
        """Bytes of frames the in-memory histories keep, across every room."""
        return self._memory.size

    def sweep(self, now: float, keep: Callable[[str], bool]) -> None:
        """Age out the in-memory histories and forget the empty ones *keep* does not want (a timer's job)."""
        self._memory.sweep(now, keep)
        self._count()

    def set(self, room: str, history: HistoryBounds | bool | None) -> None:
        """Keep *room*'s history with these bounds, or none (dropping what it kept in memory)."""
        bounds = self._rooms[room] = history_bounds(history)
        if bounds is None:
            self._memory.drop(room)

    def bounds(self, room: str) -> HistoryBounds | None:
        """*room*'s history bounds, or None when it keeps no history."""
        return self._rooms.get(room, self._default)

    def position(self, room: str) -> Position | None:
        """*room*'s latest position in memory (offset 0 before the first), or None without history."""
        bounds = self.bounds(room)
        if bounds is None:
            return None
        position = self._memory.room(room, bounds).position
        self._count()
        return position

    def append(
        self,
        room: str,
        bounds: HistoryBounds,
        message: Any,
        codec: MessageCodec[Any] | None,
        exclude_identity: str | None,
        now: float,
    ) -> tuple[bytes, Position]:
        """Give *message* the room's next offset in memory, stamp it in, and keep its frame.

        Args:
            room: the room.
            bounds: its history bounds.
            message: ``str``, ``bytes``, or a message for *codec*.
            codec: the codec for a message that is neither (the caller checked there is one).
            exclude_identity: the identity the broadcast excluded.
            now: the time.

        Returns:
            The frame, and the message's position.
        """
        kept = self._memory.room(room, bounds)
        frame = self._frame_at(message, codec, Position(kept.epoch, kept.offset + 1))
        entry, trimmed = self._memory.append(room, frame, exclude_identity, now)
        self._metrics.history_appended += 1
        self._count(trimmed)
        return frame, Position(kept.epoch, entry.offset)

    def _frame_at(self, message: Any, codec: MessageCodec[Any] | None, position: Position) -> bytes:
        if isinstance(message, str | bytes):
            return message_frame(message)
        assert codec is not None
        text = codec.encode(message)
        if self.offset_field is None:
            return message_frame(text)
        members = f"{dumps_json(self.offset_field)}:{position.offset}"
        if self.epoch_field is not None:
            members = f"{dumps_json(self.epoch_field)}:{dumps_json(position.epoch)},{members}"
        return message_frame(stamp_members(text, members))

    def payload(self, message: Any, codec: MessageCodec[Any] | None) -> tuple[str | bytes, str | None]:
        """*message* as a shared broker appends it: the payload, and the members' prefixes.

        The prefix is the offset member's (``"offset":``), or with an ``epoch_field`` the epoch
        member's and the offset member's separated by a newline (``"epoch":`` newline
        ``"offset":``; a newline never occurs in compact JSON), which the broker's append script
        stamps with the epoch and offset it gives out.
        """
        if isinstance(message, str | bytes):
            return message, None
        assert codec is not None
        if self.offset_field is None:
            return codec.encode(message), None
        member = f"{dumps_json(self.offset_field)}:"
        if self.epoch_field is not None:
            member = f"{dumps_json(self.epoch_field)}:\n{member}"
        return codec.encode(message), member

    def read(
        self,
        room: str,
        bounds: HistoryBounds,
        *,
        since: Position | None,
        last: int | None,
        identity: str | None,
        now: float,
    ) -> Recovery:
        """What a joining client replays from memory: since a position, the last messages, or nothing."""
        history = self._memory.room(room, bounds)
        self._count()
        if last is not None:
            return history.last(last, now)
        if since is None:
            return Recovery(history.position, (), True)
        return history.recover(since, now, identity)

    def count(self, recovery: Recovery, since: Position | None) -> None:
        """Count a replay (and, with *since*, a recovery, complete or partial)."""
        metrics = self._metrics
        metrics.messages_replayed += len(recovery.entries)
        if since is not None:
            if recovery.complete:
                metrics.recoveries_complete += 1
            else:
                metrics.recoveries_partial += 1
