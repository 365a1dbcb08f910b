"""Room membership bookkeeping (pure, synchronous)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trionos._rooms import Rooms


def test_join_order_leave_and_empty_rooms_disappear() -> None:
    """Members are listed in join order; the last leave removes the room."""
    rooms: Rooms[str] = Rooms()
    assert rooms.join("ann", "lobby") and rooms.join("bob", "lobby") and rooms.join("ann", "dev")
    assert not rooms.join("ann", "lobby")
    assert rooms.members("lobby") == ["ann", "bob"]
    assert rooms.rooms_of("ann") == ["lobby", "dev"]
    assert rooms.leave("ann", "dev") and rooms.rooms() == ["lobby"]
    assert not rooms.leave("ann", "dev")
    assert rooms.drop("bob") == ["lobby"]
    assert rooms.members("lobby") == ["ann"]
    assert rooms.drop("ann") == ["lobby"] and rooms.rooms() == [] and len(rooms) == 0


ops = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "drop"]), st.integers(0, 4), st.sampled_from("abc")),
    max_size=60,
)


@given(ops)
def test_matches_a_plain_model(steps: list[tuple[str, int, str]]) -> None:
    """Any sequence of join/leave/drop agrees with a list-based model, both directions."""
    rooms: Rooms[int] = Rooms()
    model: dict[str, list[int]] = {}
    for op, client, room in steps:
        if op == "join":
            assert rooms.join(client, room) == (client not in model.get(room, []))
            if client not in model.setdefault(room, []):
                model[room].append(client)
        elif op == "leave":
            assert rooms.leave(client, room) == (client in model.get(room, []))
            if client in model.get(room, []):
                model[room].remove(client)
        else:
            expected = [r for r, members in model.items() if client in members]
            assert sorted(rooms.drop(client)) == sorted(expected)
            for members in model.values():
                if client in members:
                    members.remove(client)
        model = {r: m for r, m in model.items() if m}
        assert {r: rooms.members(r) for r in rooms.rooms()} == model
        for c in range(5):
            assert sorted(rooms.rooms_of(c)) == sorted(r for r, m in model.items() if c in m)
