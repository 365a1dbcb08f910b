"""AppStateMachine: the same programs as a Hypothesis state machine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from tests.testing.apps import NO_HEARTBEAT, RelayModel, relay_app
from trionos.testing import AppStateMachine


class RelayMachine(AppStateMachine):
    """The relay, driven by hypothesis's stateful testing."""

    messages = st.integers(0, 9)
    serve_options = NO_HEARTBEAT

    def make_model(self) -> RelayModel:
        return RelayModel()

    def open_app(self) -> Any:
        return relay_app()


class WrongRelayMachine(RelayMachine):
    """A machine whose model wrongly expects echoes, to check that failures surface."""

    def make_model(self) -> RelayModel:
        return RelayModel(echo_to_sender=True)


def test_app_state_machine_runs_the_relay() -> None:
    """The state machine connects, sends and disconnects clients and finds no discrepancy."""
    run_state_machine_as_test(
        RelayMachine, settings=settings(max_examples=15, stateful_step_count=12, database=None)
    )


def test_app_state_machine_finds_a_wrong_model() -> None:
    """A model that disagrees with the app makes the machine fail with the kit's message."""
    with pytest.raises(AssertionError, match="received the wrong messages"):
        run_state_machine_as_test(
            WrongRelayMachine,
            settings=settings(max_examples=50, stateful_step_count=8, database=None, print_blob=False),
        )
