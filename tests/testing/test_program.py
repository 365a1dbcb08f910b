"""Programs: valid steps, repair, and the Hypothesis strategy that writes them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.testing.apps import RelayModel, relay_app
from trionos.testing import Connect, Disconnect, Send, Step, programs, run_program
from trionos.testing._program import repair_program, validate_program

#: Any steps by clients 0..2, valid or not.
raw_steps = st.lists(
    st.one_of(
        st.builds(Connect, client=st.integers(0, 2)),
        st.builds(Send, client=st.integers(0, 2), message=st.integers(0, 9)),
        st.builds(Disconnect, client=st.integers(0, 2), abrupt=st.booleans()),
    ),
    max_size=20,
)


@settings(max_examples=25, deadline=None, database=None)
@given(programs(st.integers(0, 9) | st.lists(st.booleans(), max_size=2), clients=3, max_steps=12))
def test_generated_programs_hold_for_the_relay(program: list[Connect | Send | Disconnect]) -> None:
    """Hypothesis-generated programs are valid and the relay matches its model on each."""
    run_program(program, RelayModel(), relay_app, heartbeat=None)


@given(raw_steps)
def test_repair_makes_any_steps_a_valid_program_and_keeps_valid_ones(steps: list[Step]) -> None:
    """repair_program's output always validates, and a valid program comes back unchanged."""
    repaired = repair_program(steps)
    validate_program(repaired)
    assert repair_program(repaired) == repaired


def test_validate_refuses_steps_that_make_no_sense() -> None:
    """A second connect, a send or disconnect while not connected, and a non-step all refuse."""
    with pytest.raises(ValueError, match=r"step 1, Connect\(client=0\): client 0 is already connected"):
        validate_program([Connect(0), Connect(0)])
    with pytest.raises(ValueError, match=r"step 2, .*client 0 is not connected"):
        validate_program([Connect(0), Disconnect(0), Send(0, 1)])
    with pytest.raises(ValueError, match=r"step 0, .*client 1 is not connected"):
        validate_program([Disconnect(1)])
    with pytest.raises(TypeError, match="step 0 is not a program step: 'hello'"):
        validate_program(["hello"])  # type: ignore[list-item]  # the point: not a step


def test_programs_refuses_bounds_below_one() -> None:
    """programs() says which bound is wrong."""
    with pytest.raises(ValueError, match="clients must be at least 1, got 0"):
        programs(st.none(), clients=0)
    with pytest.raises(ValueError, match="max_steps must be at least 1, got 0"):
        programs(st.none(), max_steps=0)
