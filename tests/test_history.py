"""The pure history: positions, the three bounds, and recovery, checked against plain lists."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionos._history import History, HistoryBounds, Position, RoomHistory, stamp_offset


def make_history(bounds: HistoryBounds) -> History:
    counter = itertools.count()
    return History(bounds, new_epoch=lambda: f"e{next(counter)}")


bounds_strategy = st.builds(
    HistoryBounds,
    max_messages=st.integers(1, 8),
    max_age=st.none() | st.floats(0.5, 20),
    max_bytes=st.none() | st.integers(1, 40),
)
# (frame size, seconds since the previous message, excluded identity)
appends_strategy = st.lists(
    st.tuples(st.integers(0, 12), st.floats(0, 5), st.sampled_from([None, "ann", "bob"])), max_size=30
)


def _expected_kept(bounds: HistoryBounds, log: list[tuple[int, bytes, float]], now: float) -> list[int]:
    """The offsets a room must keep: the newest suffix that every bound allows."""
    kept: list[int] = []
    size = 0
    for offset, frame, time in reversed(log):
        if len(kept) == bounds.max_messages:
            break
        if bounds.max_bytes is not None and size + len(frame) > bounds.max_bytes:
            break
        if bounds.max_age is not None and time < now - bounds.max_age:
            break
        kept.append(offset)
        size += len(frame)
    return kept[::-1]


@given(bounds_strategy, appends_strategy)
def test_offsets_are_consecutive_and_bounds_keep_the_newest(
    bounds: HistoryBounds, appends: list[tuple[int, float, str | None]]
) -> None:
    """Each append gets the next offset; what is kept is the newest run that all three bounds allow."""
    room = RoomHistory("e", bounds)
    log: list[tuple[int, bytes, float]] = []
    now = 0.0
    for size, gap, exclude in appends:
        now += gap
        entry, _ = room.append(b"x" * size, exclude, now)
        log.append((entry.offset, entry.frame, now))
        assert entry.offset == len(log)
        assert [e.offset for e in room] == _expected_kept(bounds, log, now)
        assert room.size == sum(len(e.frame) for e in room)
    assert room.position == Position("e", len(appends))


@given(bounds_strategy, appends_strategy, st.integers(-1, 32), st.sampled_from([None, "ann"]), st.booleans())
def test_recovery_returns_exactly_the_missed_messages(
    bounds: HistoryBounds,
    appends: list[tuple[int, float, str | None]],
    since: int,
    identity: str | None,
    same_epoch: bool,
) -> None:
    """Recovery gives the kept messages after the position, skips the identity's exclusions, and is
    complete exactly when nothing after the position was trimmed and the epoch is the same."""
    history = make_history(bounds)
    now = 0.0
    log: list[tuple[int, bytes, float, str | None]] = []
    for size, gap, exclude in appends:
        now += gap
        entry, _ = history.append("r", bytes(size), exclude, now)
        log.append((entry.offset, entry.frame, now, exclude))
    room = history.room("r")
    kept = _expected_kept(bounds, [(o, f, t) for o, f, t, _ in log], now)
    epoch = room.epoch if same_epoch else "other"
    recovery = history.recover("r", Position(epoch, since), now, identity)
    last = len(log)
    if same_epoch and 0 <= since <= last:
        first = kept[0] if kept else last + 1
        assert recovery.complete == (since >= first - 1)
        wanted = [o for o in kept if o > since]
    else:
        assert not recovery.complete
        wanted = list(kept)
    excluded = {o for o, _, _, x in log if identity is not None and x == identity}
    assert [e.offset for e in recovery.entries] == [o for o in wanted if o not in excluded]
    assert recovery.position == Position(room.epoch, last)


def test_a_new_history_has_a_new_epoch_and_an_old_position_recovers_partially() -> None:
    """A restarted process (a new History) names a new epoch: the old position cannot be trusted."""
    first = make_history(HistoryBounds())
    first.append("r", b"a", None, 0.0)
    old = first.room("r").position
    counter = itertools.count(100)
    second = History(HistoryBounds(), new_epoch=lambda: f"e{next(counter)}")
    second.append("r", b"b", None, 1.0)
    recovery = second.recover("r", old, 1.0)
    assert recovery.position.epoch != old.epoch
    assert not recovery.complete
    assert [e.frame for e in recovery.entries] == [b"b"]


def test_max_rooms_evicts_the_least_recently_appended_room() -> None:
    """Beyond max_rooms the room appended to least recently loses its history (and its epoch)."""
    history = make_history(HistoryBounds(max_rooms=2))
    history.append("a", b"1", None, 0.0)
    history.append("b", b"1", None, 0.0)
    history.append("a", b"2", None, 0.0)
    history.append("c", b"1", None, 0.0)
    assert "b" not in history and "a" in history and "c" in history
    epoch_b = "e1"
    assert history.room("b").epoch != epoch_b


def test_a_frame_larger_than_max_bytes_is_not_kept_but_uses_its_offset() -> None:
    """A single oversized frame gets an offset and is trimmed at once; recovery over it is partial."""
    room = RoomHistory("e", HistoryBounds(max_bytes=4))
    room.append(b"ok", None, 0.0)
    entry, trimmed = room.append(b"too large", None, 0.0)
    assert entry.offset == 2 and trimmed == 2 and len(room) == 0
    assert not room.recover(Position("e", 1), 0.0).complete
    assert room.recover(Position("e", 2), 0.0).complete


@pytest.mark.parametrize(
    ("payload", "stamped"),
    [
        ('{"type":"message","text":"}"}', '{"type":"message","text":"}","offset":7}'),
        ("{}", '{"offset":7}'),
        ("plain text", "plain text"),
        ("[1]", "[1]"),
    ],
)
def test_stamp_offset_adds_the_field_to_json_objects_only(payload: str, stamped: str) -> None:
    """The offset becomes the object's last member; text that is not an object is left alone."""
    assert stamp_offset(payload, "offset", 7) == stamped


def test_bounds_are_validated() -> None:
    """A bound must be positive (or None where None means unbounded)."""
    with pytest.raises(ValueError, match="max_messages must be positive"):
        HistoryBounds(max_messages=0)
    with pytest.raises(ValueError, match="max_age must be positive"):
        HistoryBounds(max_age=-1.0)


def test_joins_of_new_rooms_never_evict_a_room_with_messages() -> None:
    """Reading (joining) max_rooms + 100 fresh rooms leaves every room with messages and its epoch alone."""
    history = make_history(HistoryBounds(max_rooms=100))
    history.append("kept", b"m", None, 0.0)
    epoch = history.room("kept").epoch
    for n in range(200):
        history.room(f"joined-{n}")  # what a join of an empty room does
    assert history.room("kept").epoch == epoch and len(history.room("kept")) == 1
    assert len(history) == 101  # the empty histories are bounded apart: 100 of them, then "kept"
    assert history.rooms_dropped == 100


def test_a_joined_room_keeps_its_epoch_through_its_first_message() -> None:
    """The epoch a join saw in an empty room is the one its first message gets."""
    history = make_history(HistoryBounds(max_rooms=2))
    joined = history.room("r").position
    entry, _ = history.append("r", b"first", None, 0.0)
    assert history.room("r").position == Position(joined.epoch, entry.offset)
    assert history.recover("r", joined, 0.0).complete


def test_the_total_byte_bound_trims_the_rooms_appended_to_least_recently() -> None:
    """Across rooms at most max_total_bytes are kept: the least recently appended lose their oldest."""
    history = make_history(HistoryBounds(max_bytes=100, max_total_bytes=250))
    for room in ("a", "b", "c"):
        history.append(room, b"x" * 50, None, 0.0)
        history.append(room, b"y" * 50, None, 0.0)
    assert history.size == 250
    assert [len(history.room(r)) for r in ("a", "b", "c")] == [1, 2, 2]
    recovery = history.recover("a", Position(history.room("a").epoch, 0), 0.0)
    assert not recovery.complete and [e.offset for e in recovery.entries] == [2]
    assert history.total_trimmed == 1


@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 60), st.booleans()), max_size=60),
    st.integers(1, 200),
)
def test_the_total_never_exceeds_its_bound_and_matches_what_is_kept(
    steps: list[tuple[str, int, bool]], limit: int
) -> None:
    """Whatever is appended, read or dropped, the total is the sum of the kept frames and within bound."""
    history = make_history(HistoryBounds(max_bytes=80, max_rooms=3, max_total_bytes=limit, max_age=None))
    for room, size, append in steps:
        if append:
            history.append(room, b"z" * size, None, 0.0)
        elif size % 3:
            history.room(room)
        else:
            history.drop(room)
        kept = [history.get(r) for r in "abcdef"]
        assert history.size == sum(sum(len(e.frame) for e in h) for h in kept if h is not None)
        assert history.size <= limit


def test_a_sweep_ages_out_idle_rooms_and_forgets_the_empty_ones_nobody_is_in() -> None:
    """The timer's sweep drops aged messages without a read and forgets empty rooms unless kept."""
    history = make_history(HistoryBounds(max_age=10.0))
    history.append("old", b"m" * 100, None, 0.0)
    history.append("fresh", b"m", None, 15.0)
    history.room("joined")
    history.room("occupied")
    assert history.sweep(20.0, keep=lambda room: room == "occupied") == 2
    assert "old" not in history and "joined" not in history
    assert "fresh" in history and "occupied" in history
    assert history.size == 1 and history.rooms_dropped == 2
