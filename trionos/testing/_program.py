"""Programs for model-based tests: the steps, the model they are checked against, and their generation.

A *program* is a list of steps (:class:`Connect`, :class:`Send`, :class:`Disconnect`) by numbered
clients. A *model* is a plain Python object that says, for each step, which messages each
connected client must receive because of it. :mod:`._harness` runs programs against an app;
this module says what a valid program is, and Hypothesis writes them (:func:`programs`),
shrinking a failing one to the shortest program that still fails. Pure data: no trio, and
hypothesis is imported only inside :func:`programs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "Connect",
    "Deliveries",
    "Disconnect",
    "ProgramModel",
    "Send",
    "Step",
    "programs",
    "repair_program",
    "validate_program",
]

#: What a model returns for one step: client number -> the messages it must receive, in order.
Deliveries = Mapping[int, Sequence[Any]]


@attrs.frozen
class Connect:
    """Client ``client`` opens a WebSocket to the app."""

    client: int


@attrs.frozen
class Send:
    """Client ``client`` sends ``message`` (str/bytes as is, anything else encoded, JSON by default)."""

    client: int
    message: Any


@attrs.frozen
class Disconnect:
    """Client ``client`` goes away: a clean close (1000), or ``abrupt``: the stream just ends (1006)."""

    client: int
    abrupt: bool = False


Step = Connect | Send | Disconnect


class ProgramModel(Protocol):
    """What a model implements: the deliveries each step causes (clients not listed get nothing).

    Messages are compared as received: decoded with the ``codec`` passed to the runner, or parsed
    as JSON when none is given (binary messages stay bytes). Use :data:`unittest.mock.ANY` for
    parts the model cannot predict, such as error texts.
    """

    def connect(self, client: int) -> Deliveries:
        """Client *client* connected.

        Args:
            client: its number.

        Returns:
            What each client must receive because of it.
        """
        ...

    def send(self, client: int, message: Any) -> Deliveries:
        """Client *client* sent *message*.

        Args:
            client: its number.
            message: what it sent, as the program has it (before encoding).

        Returns:
            What each client must receive because of it.
        """
        ...

    def disconnect(self, client: int) -> Deliveries:
        """Client *client* disconnected (cleanly or not); it no longer receives anything.

        Args:
            client: its number.

        Returns:
            What each remaining client must receive because of it.
        """
        ...


def validate_program(steps: list[Step]) -> None:
    """Check that every step makes sense where it is, before anything runs.

    Args:
        steps: the program.

    Raises:
        TypeError: an item is not a step.
        ValueError: a client connects twice, or sends or disconnects while not connected.
    """
    connected: set[int] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, Connect | Send | Disconnect):
            raise TypeError(f"step {i} is not a program step: {step!r}")
        if isinstance(step, Connect):
            if step.client in connected:
                raise ValueError(f"step {i}, {step!r}: client {step.client} is already connected")
            connected.add(step.client)
        elif step.client not in connected:
            raise ValueError(f"step {i}, {step!r}: client {step.client} is not connected")
        elif isinstance(step, Disconnect):
            connected.discard(step.client)


def repair_program(steps: list[Step]) -> list[Step]:
    """Make a list of steps a valid program: connect clients before they send, drop void steps.

    Args:
        steps: any steps, in order.

    Returns:
        A new list that :func:`validate_program` accepts.
    """
    connected: set[int] = set()
    program: list[Step] = []
    for step in steps:
        if isinstance(step, Connect):
            if step.client in connected:
                continue
            connected.add(step.client)
        elif isinstance(step, Send):
            if step.client not in connected:
                connected.add(step.client)
                program.append(Connect(step.client))
        elif step.client in connected:
            connected.discard(step.client)
        else:
            continue
        program.append(step)
    return program


def programs(
    messages: SearchStrategy[Any],
    *,
    clients: int = 3,
    max_steps: int = 30,
    abrupt: bool = True,
) -> SearchStrategy[list[Step]]:
    """A Hypothesis strategy for valid programs, for :func:`run_program` in a ``@given`` test.

    A client connects before it first sends (a connect is inserted when needed). Failing
    programs shrink towards fewer steps, fewer clients and simpler messages. Imports hypothesis
    when called.

    Args:
        messages: draws what clients send.
        clients: client numbers are ``0..clients-1``.
        max_steps: the most steps a program has (the length is drawn uniformly from 1).
        abrupt: some disconnects end the stream without a close frame (1006).

    Returns:
        A strategy for lists of :data:`~trionos.testing.Step`.

    Raises:
        ValueError: ``clients`` or ``max_steps`` is below 1.
    """
    from hypothesis import strategies as st

    if clients < 1:
        raise ValueError(f"clients must be at least 1, got {clients!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    number = st.integers(0, clients - 1)
    send = st.builds(Send, client=number, message=messages)
    step = st.one_of(
        # First, so that steps shrink to a connect, which repair_program drops when it changes nothing.
        st.builds(Connect, client=number),
        # Sends are what exercise the app: make them most of the steps.
        send,
        send,
        send,
        st.builds(Disconnect, client=number, abrupt=st.booleans() if abrupt else st.just(False)),
    )

    @st.composite
    def program(draw: st.DrawFn) -> list[Step]:
        # The length is drawn first (uniformly, shrinking towards 1): plain st.lists averages
        # only a handful of elements, too few to reach the states where bugs hide.
        size = draw(st.integers(1, max_steps))
        return repair_program(draw(st.lists(step, min_size=size, max_size=size)))

    return program()
