"""The error hierarchy: messages that say what happened, and the exception-group helpers."""

from __future__ import annotations

import pytest

import trionos
from trionos._errors import exception_leaves, single_leaf


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (trionos.ConnectTimeout, trionos.HandshakeError),
        (trionos.ConnectionRejected, trionos.HandshakeError),
        (trionos.DecodeError, ValueError),
        (trionos.EncodeError, TypeError),
        (trionos.BrokerError, trionos.TrionosError),
    ],
)
def test_hierarchy(error: type[Exception], parent: type[Exception]) -> None:
    """Each error sits where the module docstring's tree puts it (and under TrionosError)."""
    assert issubclass(error, parent) and issubclass(error, trionos.TrionosError)


def test_connection_closed_message_has_code_and_reason() -> None:
    """The message names the close code, and the reason only when one was given."""
    assert str(trionos.ConnectionClosed(1006)) == "connection closed with code 1006"
    closed = trionos.ConnectionClosed(1001, "going away")
    assert (closed.code, closed.reason) == (1001, "going away")
    assert str(closed) == "connection closed with code 1001 (going away)"


@pytest.mark.parametrize(("code", "normal"), [(1000, True), (1001, True), (1002, False), (1011, False)])
def test_connection_closed_normal(code: int, normal: bool) -> None:
    """Only 1000 and 1001 count as a normal close."""
    assert trionos.ConnectionClosed(code).normal is normal


def test_connection_rejected_message_quotes_the_start_of_the_body() -> None:
    """A rejection shows the HTTP status and at most 200 characters of the body, decoded leniently."""
    assert str(trionos.ConnectionRejected(403)) == "server rejected the WebSocket upgrade with HTTP 403"
    rejected = trionos.ConnectionRejected(503, b"\xff" + b"x" * 500)
    assert (rejected.status_code, len(rejected.body)) == (503, 501)
    start = "\ufffd" + "x" * 199
    assert str(rejected) == f"server rejected the WebSocket upgrade with HTTP 503: {start!r}"


def test_exception_leaves_of_a_plain_exception_is_itself() -> None:
    """An exception that is not a group is its own only leaf."""
    error = KeyError("k")
    assert list(exception_leaves(error)) == [error]


def test_exception_leaves_flattens_nested_groups() -> None:
    """Every non-group exception of a nested tree is yielded, and no group."""
    a, b, c = ValueError("a"), KeyError("b"), trionos.BrokerError("c")
    tree = BaseExceptionGroup("top", [a, ExceptionGroup("mid", [b, ExceptionGroup("low", [c])])])
    leaves = list(exception_leaves(tree))
    assert sorted(map(repr, leaves)) == sorted(map(repr, [a, b, c]))


def test_exception_leaves_survives_a_tree_deeper_than_the_recursion_limit() -> None:
    """The walk is iterative: 5,000 nested groups do not exhaust the stack."""
    leaf: BaseException = ValueError("deep")
    group = BaseExceptionGroup("g", [leaf])
    for _ in range(5_000):
        group = BaseExceptionGroup("g", [group])
    assert list(exception_leaves(group)) == [leaf]


def test_single_leaf() -> None:
    """single_leaf unwraps a group around one exception, however deep, and gives None for several."""
    error = OSError("reset")
    assert single_leaf(ExceptionGroup("a", [ExceptionGroup("b", [error])])) is error
    assert single_leaf(ExceptionGroup("a", [error, ValueError()])) is None
