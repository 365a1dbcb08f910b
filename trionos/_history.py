"""Per-room message history: positions, bounds and recovery.

Pure: no trio, no I/O, no clock and no random source of its own (both are passed in), so every
rule here is tested without sockets. The hub (:mod:`trionos._hub`) adapts it.

**Positions.** Each message broadcast into a room with history gets a :class:`Position`: an
``offset`` that grows by exactly one per room message (the first message is offset 1; 0 means
"nothing yet") and an ``epoch``, an opaque string naming one continuous stream of offsets. The
epoch changes whenever continuity is lost: a room's history is created afresh (a restarted
process, a room evicted by ``max_rooms``, a flushed Redis), so an offset is only meaningful
together with its epoch.

**Bounds.** A room keeps at most ``max_messages`` messages, none older than ``max_age`` seconds
and at most ``max_bytes`` bytes of frames. All three apply at once, so the strictest wins: a
message is kept only while every bound allows it, and trimming always removes the oldest
messages first. A single frame larger than ``max_bytes`` is not kept at all (its offset is still
used). Age is checked when a room is appended to or read, and by :meth:`History.sweep` (the hub
calls it on a timer), which also forgets rooms left with nothing kept. At most ``max_rooms``
rooms with messages keep a history; beyond that the room appended to least recently loses its
history (and with it its epoch). A room that was only read (joined) and never appended to is
kept apart, in at most ``max_rooms`` *empty* histories of its own: joins can never evict a room
with messages. Across every room at most ``max_total_bytes`` bytes of frames are kept: beyond
that the rooms appended to least recently lose their oldest messages (their epoch stays, so a
recovery over them is reported partial).

**Recovery.** :meth:`History.recover` answers "what did I miss since this position?": the
messages after it, in order, and whether that is *everything* that was missed. It is complete
when the epoch is the same and no message after the position was trimmed. Otherwise the
recovery is partial and returns what is still kept (every kept message when the epoch changed),
so that the application can say "some messages may be missing".

**The last messages.** :meth:`RoomHistory.last` answers "show me the room's last N messages"
(a fresh view, for a client that joins without a position): the kept messages among the room's
last N offsets, oldest first, every one (a fresh view has not seen its own messages either), and
whether none of those N was trimmed.

**Exclusion.** A message broadcast with ``exclude`` remembers the excluded client's *identity*
(a string the application chooses, stable across reconnections, such as a username), and
recovery skips it for that identity: a message that excluded its sender is never replayed to
that sender. Skipped messages still count as recovered.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator

import attrs

from ._json import dumps as dumps_json

__all__ = [
    "History",
    "HistoryBounds",
    "HistoryEntry",
    "Position",
    "Recovery",
    "RoomHistory",
    "Total",
    "last_messages",
    "stamp_members",
    "stamp_offset",
]


@attrs.frozen
class Position:
    """Where a message sits in its room's history.

    Args:
        epoch: names one continuous stream of offsets; it changes whenever continuity is lost.
        offset: the message's number in that stream (1 for the first; 0 means "nothing yet").
    """

    epoch: str
    offset: int


def _positive(name: str) -> Callable[[object, object, object], None]:
    """An attrs validator: *name* is positive (not a bool) or None."""

    def check(_: object, __: object, value: object) -> None:
        # Any value may arrive: a non-number raises TypeError at the comparison, as it always did.
        if value is not None and (isinstance(value, bool) or not value > 0):  # type: ignore[operator]
            raise ValueError(f"{name} must be positive or None, got {value!r}")

    return check


@attrs.frozen
class HistoryBounds:
    """How much history each room keeps. Every bound applies; the strictest wins.

    Age is checked when a room is appended to or read, not by a timer. The Recovery page of the
    documentation says what a client sees at each bound.

    Args:
        max_messages: messages kept per room.
        max_age: seconds a message is kept (None: no age limit).
        max_bytes: bytes of frames kept per room (None: no byte limit); a larger single frame is
            not kept at all.
        max_rooms: rooms with messages that keep a history; beyond that the room appended to
            least recently loses its history and its epoch. Rooms only joined (no message yet)
            are kept apart, at most this many too, and never evict a room with messages.
        max_total_bytes: bytes of frames kept across every room (None: no total bound); beyond
            that the rooms appended to least recently lose their oldest messages.

    Raises:
        ValueError: a bound is not positive (or None where allowed).
    """

    max_messages: int = attrs.field(default=200, validator=_positive("max_messages"))
    max_age: float | None = attrs.field(default=600.0, validator=_positive("max_age"))
    max_bytes: int | None = attrs.field(default=1 << 20, validator=_positive("max_bytes"))
    max_rooms: int = attrs.field(default=10_000, validator=_positive("max_rooms"))
    max_total_bytes: int | None = attrs.field(default=256 << 20, validator=_positive("max_total_bytes"))


@attrs.frozen
class HistoryEntry:
    """One message in a room's history.

    Args:
        offset: its offset in the room's epoch.
        frame: its WebSocket frame, as first sent.
        exclude: the identity of the client the broadcast excluded, if any.
        time: when it was appended (on the clock the history was given).
    """

    offset: int
    frame: bytes
    #: The identity of the client the broadcast excluded, if any.
    exclude: str | None
    #: When it was appended (the clock the history was given).
    time: float


@attrs.frozen
class Recovery:
    """The answer to a recovery query.

    What :meth:`Hub.join_with_history <trionos.Hub.join_with_history>` returns.

    Args:
        position: the room's latest position when the query was answered (the recovering
            client continues from there).
        entries: the missed messages still kept, in order, without those that excluded the
            recovering identity.
        complete: whether they are all that was missed (False when the epoch changed or a
            missed message was trimmed: "some messages may be missing").
    """

    position: Position
    entries: tuple[HistoryEntry, ...]
    complete: bool


class RoomHistory:
    """One room's stream: its epoch, the last offset given out, and the messages still kept.

    Args:
        epoch: the stream's epoch.
        bounds: what it keeps.
    """

    __slots__ = ("_entries", "_total", "bounds", "epoch", "offset", "size")

    def __init__(self, epoch: str, bounds: HistoryBounds, total: Total | None = None) -> None:
        self.epoch = epoch
        self.bounds = bounds
        #: The last offset given out (0: none yet).
        self.offset = 0
        #: Bytes of frames kept.
        self.size = 0
        self._entries: deque[HistoryEntry] = deque()
        self._total = total or Total()

    def __len__(self) -> int:
        """The number of messages kept."""
        return len(self._entries)

    def __iter__(self) -> Iterator[HistoryEntry]:
        """The messages kept, oldest first."""
        return iter(self._entries)

    @property
    def position(self) -> Position:
        """The room's latest position (offset 0 before the first message)."""
        return Position(self.epoch, self.offset)

    @property
    def first_kept(self) -> int:
        """The offset of the oldest message kept (``offset + 1`` when none is kept)."""
        return self._entries[0].offset if self._entries else self.offset + 1

    def append(self, frame: bytes, exclude: str | None, now: float) -> tuple[HistoryEntry, int]:
        """Give *frame* the next offset and keep it (then trim).

        Args:
            frame: the message's WebSocket frame.
            exclude: the identity of the client the broadcast excluded, if any.
            now: the time, on the history's clock.

        Returns:
            The new entry, and how many messages the bounds trimmed.
        """
        self.offset += 1
        entry = HistoryEntry(self.offset, frame, exclude, now)
        self._entries.append(entry)
        self.size += len(frame)
        self._total.size += len(frame)
        return entry, self.trim(now)

    def trim(self, now: float) -> int:
        """Drop the oldest messages that a bound no longer allows.

        Args:
            now: the time, on the history's clock.

        Returns:
            How many were dropped.
        """
        bounds, entries = self.bounds, self._entries
        trimmed = 0
        while entries and (
            len(entries) > bounds.max_messages
            or (bounds.max_bytes is not None and self.size > bounds.max_bytes)
            or (bounds.max_age is not None and entries[0].time < now - bounds.max_age)
        ):
            self._pop()
            trimmed += 1
        return trimmed

    def trim_oldest(self, size: int) -> int:
        """Drop the oldest messages until at most *size* bytes are kept (the epoch stays).

        Args:
            size: the bytes of frames the room may keep.

        Returns:
            How many were dropped.
        """
        trimmed = 0
        while self._entries and self.size > size:
            self._pop()
            trimmed += 1
        return trimmed

    def _pop(self) -> None:
        size = len(self._entries.popleft().frame)
        self.size -= size
        self._total.size -= size

    def forget(self) -> None:
        """Drop every message (the history is being forgotten): the total no longer counts them."""
        self._total.size -= self.size
        self.size = 0
        self._entries.clear()

    def recover(self, since: Position, now: float, identity: str | None = None) -> Recovery:
        """The messages after *since* still kept, and whether they are all that was missed.

        Complete when *since* is in this epoch, not ahead of it, and nothing after it was
        trimmed. A different epoch returns every message kept, as partial.

        Args:
            since: the last position the client saw.
            now: the time, on the history's clock (age bounds apply first).
            identity: the recovering client's identity: messages that excluded it are skipped.

        Returns:
            The :class:`Recovery`.
        """
        self.trim(now)
        if since.epoch != self.epoch or since.offset > self.offset or since.offset < 0:
            after = 0
            complete = False
        else:
            after = since.offset
            complete = since.offset >= self.first_kept - 1
        entries = tuple(
            e for e in self._entries if e.offset > after and (identity is None or e.exclude != identity)
        )
        return Recovery(self.position, entries, complete)

    def last(self, count: int, now: float) -> Recovery:
        """The room's last *count* messages still kept, oldest first, whatever they excluded.

        Args:
            count: how many (at least 0).
            now: the time, on the history's clock (age bounds apply first).

        Returns:
            The :class:`Recovery`: complete when none of the last *count* offsets was trimmed.
        """
        self.trim(now)
        return last_messages(self.position, self._entries, count)


@attrs.define
class Total:
    """The bytes of frames kept by every room of one :class:`History` (shared, mutable)."""

    size: int = 0


def last_messages(position: Position, entries: Iterable[HistoryEntry], count: int) -> Recovery:
    """The entries among the last *count* offsets up to *position*, as a recovery.

    Args:
        position: the room's latest position.
        entries: the messages kept, oldest first.
        count: how many of the last messages are asked for.

    Returns:
        Those still kept, oldest first, and whether none of them was trimmed (or lost with an
        epoch) before *position*.
    """
    after = max(0, position.offset - count)
    kept = tuple(e for e in entries if e.offset > after)
    first = kept[0].offset if kept else position.offset + 1
    return Recovery(position, kept, first <= after + 1)


class History:
    """Every room's history for one hub (or one node's view of them).

    No clock is kept: callers pass ``now`` to each call, so the same object works with any clock.

    Bounds: ``max_rooms`` rooms with messages, as many empty ones (started by a read, never
    appended to) kept apart, and ``max_total_bytes`` bytes of frames across them all.

    Args:
        bounds: the default bounds, and ``max_rooms`` and ``max_total_bytes`` for all rooms.
        new_epoch: makes a fresh epoch string whenever a room's history starts (pass a seeded
            source in tests; the hub uses ``secrets.token_hex``).
    """

    def __init__(self, bounds: HistoryBounds, *, new_epoch: Callable[[], str]) -> None:
        self.bounds = bounds
        self._new_epoch = new_epoch
        # Rooms that were appended to, least recently appended first.
        self._rooms: OrderedDict[str, RoomHistory] = OrderedDict()
        # Rooms only read so far (an epoch and offset 0), least recently started first.
        self._empty: OrderedDict[str, RoomHistory] = OrderedDict()
        self._total = Total()
        #: Rooms whose history was dropped by ``max_rooms``, or by :meth:`sweep` (counter).
        self.rooms_dropped = 0
        #: Messages trimmed to keep ``max_total_bytes`` (counter).
        self.total_trimmed = 0

    @property
    def size(self) -> int:
        """Bytes of frames kept across every room."""
        return self._total.size

    def __len__(self) -> int:
        """The number of rooms with a history (with messages or not)."""
        return len(self._rooms) + len(self._empty)

    def __contains__(self, room: str) -> bool:
        """Whether *room* has a history now."""
        return room in self._rooms or room in self._empty

    def get(self, room: str) -> RoomHistory | None:
        """The room's history, without starting one.

        Args:
            room: the room's name.

        Returns:
            Its :class:`RoomHistory`, or None.
        """
        history = self._rooms.get(room)  # (not `or`: an empty RoomHistory is falsy)
        return self._empty.get(room) if history is None else history

    def room(self, room: str, bounds: HistoryBounds | None = None) -> RoomHistory:
        """The room's history, started (with a new epoch) when it has none.

        A history started here is empty and kept apart from the rooms with messages: starting
        one may forget the empty history started least recently, never a room with messages.

        Args:
            room: the room's name.
            bounds: apply to a history started here, and replace those of an existing one
                (default: this object's, for a new history; an existing one keeps its own).

        Returns:
            Its :class:`RoomHistory`.
        """
        history = self.get(room)
        if history is not None:
            if bounds is not None:
                history.bounds = bounds
        else:
            history = self._empty[room] = RoomHistory(self._new_epoch(), bounds or self.bounds, self._total)
            while len(self._empty) > self.bounds.max_rooms:
                self._empty.popitem(last=False)
                self.rooms_dropped += 1
        return history

    def drop(self, room: str) -> None:
        """Forget *room*'s history (a later one starts with a new epoch).

        Args:
            room: the room's name.
        """
        for rooms in (self._rooms, self._empty):
            history = rooms.pop(room, None)
            if history is not None:
                history.forget()

    def next_position(self, room: str) -> Position:
        """The position the next message in *room* will get (starting its history if needed).

        Args:
            room: the room's name.

        Returns:
            The :class:`Position`.
        """
        history = self.room(room)
        return Position(history.epoch, history.offset + 1)

    def append(self, room: str, frame: bytes, exclude: str | None, now: float) -> tuple[HistoryEntry, int]:
        """Append *frame* to *room*'s history (see :meth:`RoomHistory.append`).

        A room's first message moves it among the rooms with messages, which may evict the one
        appended to least recently (``max_rooms``); then rooms appended to least recently lose
        their oldest messages while the total is over ``max_total_bytes``.

        Args:
            room: the room's name.
            frame: the message's WebSocket frame.
            exclude: the identity of the client the broadcast excluded, if any.
            now: the time, on the history's clock.

        Returns:
            The new entry, and how many messages the bounds trimmed (this room's and others').
        """
        history = self.room(room)
        if self._empty.pop(room, None) is not None:
            self._rooms[room] = history
            while len(self._rooms) > self.bounds.max_rooms:
                self._rooms.popitem(last=False)[1].forget()
                self.rooms_dropped += 1
        self._rooms.move_to_end(room)
        entry, trimmed = history.append(frame, exclude, now)
        return entry, trimmed + self._trim_total()

    def _trim_total(self) -> int:
        """Trim the rooms appended to least recently until the total is within its bound."""
        limit = self.bounds.max_total_bytes
        trimmed = 0
        if limit is None or self._total.size <= limit:
            return 0
        for history in self._rooms.values():
            trimmed += history.trim_oldest(max(0, history.size - (self._total.size - limit)))
            if self._total.size <= limit:
                break
        self.total_trimmed += trimmed
        return trimmed

    def sweep(self, now: float, keep: Callable[[str], bool]) -> int:
        """Apply the age bounds to every room, and forget rooms left with nothing kept.

        The hub calls it on a timer, so an idle room's messages age out without a read. A room
        that has nothing kept (never appended to, or every message aged out) and for which
        ``keep(room)`` is false (the hub: no member) loses its history; its epoch goes with it.

        Args:
            now: the time, on the history's clock.
            keep: whether a room must keep its (empty) history.

        Returns:
            How many rooms were forgotten.
        """
        forgotten = 0
        for rooms in (self._rooms, self._empty):
            for name, history in list(rooms.items()):
                history.trim(now)
                if not len(history) and not keep(name):
                    del rooms[name]
                    forgotten += 1
        self.rooms_dropped += forgotten
        return forgotten

    def recover(self, room: str, since: Position, now: float, identity: str | None = None) -> Recovery:
        """What *room* holds after *since* (see :meth:`RoomHistory.recover`).

        Args:
            room: the room's name.
            since: the last position the client saw.
            now: the time, on the history's clock.
            identity: the recovering client's identity.

        Returns:
            The :class:`Recovery`.
        """
        return self.room(room).recover(since, now, identity)


def stamp_offset(payload: str, field: str, offset: int) -> str:
    """Add ``"field": offset`` to a JSON object's text as its last member.

    Text that is not a JSON object (no ``{`` ... ``}`` around it) is returned unchanged: only
    codec-encoded messages carry their offset.

    Args:
        payload: the text of a JSON object.
        field: the member's name.
        offset: its value.

    Returns:
        The text with the member added.
    """
    return stamp_members(payload, f"{dumps_json(field)}:{offset}")


def stamp_members(payload: str, members: str) -> str:
    """Add *members* (JSON object members, as text) to a JSON object's text, last.

    Text that is not a JSON object (no ``{`` ... ``}`` around it) is returned unchanged.

    Args:
        payload: the text of a JSON object.
        members: e.g. ``"epoch":"9f2c","offset":7``.

    Returns:
        The text with the members added.
    """
    if len(payload) < 2 or payload[0] != "{" or payload[-1] != "}":
        return payload
    if payload[1:-1].strip():
        return f"{payload[:-1]},{members}}}"
    return f"{{{members}}}"
