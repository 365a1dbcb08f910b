"""run_program and check_program: replaying programs against an app and checking a model."""

from __future__ import annotations

import pytest

from tests.testing.apps import RelayModel, relay_app
from trionos.testing import Connect, Disconnect, Send, run_program


def test_run_program_passes_a_correct_model() -> None:
    """A hand-written program with clean and abrupt disconnects matches the model."""
    program: list[Connect | Send | Disconnect] = [
        Connect(0),
        Connect(1),
        Send(0, {"n": 1}),
        Connect(2),
        Send(2, [1, 2]),
        Disconnect(1, abrupt=True),
        Send(0, 3),
        Disconnect(0),
        Send(2, None),
    ]
    run_program(program, RelayModel(), relay_app, heartbeat=None)


def test_run_program_reports_the_first_wrong_step() -> None:
    """A model that disagrees fails at the first differing step with expected and got."""
    with pytest.raises(AssertionError) as info:
        run_program([Connect(0), Connect(1), Send(0, {"n": 1})], RelayModel(echo_to_sender=True), relay_app)
    text = str(info.value)
    assert text.startswith("after step 2, Send(client=0, message={'n': 1}):")
    assert "client 0 received the wrong messages\n    expected: [{'n': 1}]\n    got:      []" in text
    assert "  1: Connect(client=1)" in text
    with pytest.raises(ValueError, match=r"step 0, Send\(client=5, message=1\): client 5 is not connected"):
        run_program([Send(5, 1)], RelayModel(), relay_app)
