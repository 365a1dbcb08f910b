"""The browser client's position bookkeeping (trionos.js ``Positions``) against :class:`trionos.Positions`.

Both read the cases of ``tests/js/positions_cases.json`` (``tests/js/positions.test.mjs`` runs them in
Node); here they run through the Python class, and a differential property test feeds the same random
sequences to both (Node through ``tests/js/positions.mjs``, one process per example) and compares
every observation. Skipped when Node is missing (``make test`` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trionos import Position, Positions
from trionos._reconnect import MAX_AHEAD

JS = Path(__file__).resolve().parent / "js"
SHARED = json.loads((JS / "positions_cases.json").read_text(encoding="utf-8"))
NODE = shutil.which("node")
ROOM = "r"

Step = list[Any]


def _pair(position: Position | None) -> list[Any] | None:
    return None if position is None else [position.epoch, position.offset]


def run(steps: list[Step]) -> list[Any]:
    """Run *steps* (the fixture's format) on a fresh Positions; what each observed, as positions.mjs says."""
    positions = Positions()
    seen: list[Any] = []
    for op, *args in steps:
        if op == "welcome":
            positions.welcome(ROOM, Position(args[0], args[1]), args[2])
            seen.append(None)
        elif op == "own":
            positions.own(ROOM, args[0])
            seen.append(None)
        elif op == "forget":
            positions.forget(ROOM)
            seen.append(None)
        elif op == "receive":
            seen.append(positions.receive(ROOM, args[0], args[1]))
        elif op == "receive_run":
            seen.append([positions.receive(ROOM, o, args[2]) for o in range(args[0], args[1] + 1)])
        elif op == "due":
            seen.append(_pair(positions.recovery_due(ROOM)))
        else:
            assert op == "since", op
            seen.append(_pair(positions.since(ROOM)))
    return seen


def expected(step: Step) -> Any:
    """What the fixture says *step* observes (None for steps that observe nothing)."""
    op = step[0]
    if op == "receive":
        return step[3]
    if op == "receive_run":
        return [step[4]] * (step[2] - step[1] + 1)
    if op in ("due", "since"):
        return step[1]
    return None


def test_the_shared_bound_is_max_ahead() -> None:
    """The fixture's bound beyond a gap is the Python client's MAX_AHEAD (trionos.js checks its own)."""
    assert SHARED["max_ahead"] == MAX_AHEAD


@pytest.mark.parametrize("case", SHARED["cases"], ids=lambda case: str(case["name"])[:60])
def test_a_shared_case(case: dict[str, Any]) -> None:
    """trionos.Positions observes what the shared case expects, step by step."""
    steps = case["steps"]
    assert run(steps) == [expected(step) for step in steps]


EPOCHS = st.sampled_from(["e", "f", "g"])
OFFSETS = st.integers(0, 12)
STEPS = st.one_of(
    st.tuples(st.just("welcome"), EPOCHS, OFFSETS, st.sampled_from([None, True, False])),
    st.tuples(st.just("receive"), OFFSETS, st.one_of(st.none(), EPOCHS)),
    st.tuples(st.just("receive"), OFFSETS, st.one_of(st.none(), EPOCHS)),
    st.tuples(st.just("receive"), OFFSETS, st.one_of(st.none(), EPOCHS)),
    st.tuples(st.just("own"), OFFSETS),
    st.tuples(st.just("due")),
    st.tuples(st.just("since")),
    st.tuples(st.just("forget")),
    # Far beyond a gap: the bound (MAX_AHEAD) and giving the gap up.
    st.tuples(st.just("receive_run"), st.integers(2, 20), st.integers(MAX_AHEAD - 5, MAX_AHEAD + 30), EPOCHS),
)
WELCOME = st.tuples(st.just("welcome"), EPOCHS, OFFSETS, st.none()).map(list)
#: Each sequence starts with a welcome (before it, every message is accepted and nothing is kept).
SEQUENCE = st.builds(
    lambda first, rest: [first, *rest], WELCOME, st.lists(STEPS.map(list), min_size=3, max_size=40)
)
SEQUENCES = st.lists(SEQUENCE, min_size=10, max_size=30)


@pytest.mark.skipif(NODE is None, reason="node is not installed (`make test` installs it)")
@settings(max_examples=30, deadline=None)
@given(SEQUENCES)
def test_trionos_js_keeps_the_same_positions_as_the_python_client(sequences: list[list[Step]]) -> None:
    """Random sequences of welcomes, messages, acks and recovery checks: both clients observe the same."""
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(JS / "positions.mjs")],
        input=json.dumps(sequences),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == [run(steps) for steps in sequences]
