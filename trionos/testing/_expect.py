"""Assertions about what a connection receives, in the spirit of Phoenix's ``assert_push``.

Every wait is a cancel scope on trio's clock, so under ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``) a timeout costs no wall-clock time: ``expect_silence(ws, timeout=60)`` returns
at once when nothing else can happen. Failures raise :class:`AssertionError` with the expected and
the received value side by side.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from .._connection import MessageCodec
from .._errors import ConnectionClosed, DecodeError
from .._json import loads as loads_json

__all__ = ["Receiver", "expect_closed", "expect_message", "expect_silence"]

_MAX_REPR = 600


class Receiver(Protocol):
    """Anything with ``recv()``: a :class:`trionos.WebSocket` or a :class:`~trionos.testing.RawPeer`."""

    async def recv(self) -> str | bytes:
        """Receive the next message.

        Returns:
            A text message as ``str``, a binary one as ``bytes``.

        Raises:
            ~trionos.ConnectionClosed: the connection closed instead.
        """
        ...


def _show(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


async def _receive(ws: Receiver, timeout: float, waiting_for: str) -> str | bytes:  # noqa: ASYNC109
    try:
        with trio.fail_after(timeout):
            return await ws.recv()
    except trio.TooSlowError:
        raise AssertionError(f"expected {waiting_for} within {timeout:g} s, but nothing arrived") from None
    except ConnectionClosed as exc:
        raise AssertionError(f"expected {waiting_for}, but the {exc}") from None


def _interpret(raw: str | bytes, expected: object, codec: MessageCodec[Any] | None) -> Any:
    """The received message in the form ``expected`` is written in."""
    if codec is not None:
        try:
            return codec.decode(raw)
        except DecodeError as exc:
            raise AssertionError(
                f"expected {_show(expected)}, got a message the codec cannot decode: {_show(raw)} ({exc})"
            ) from None
    if isinstance(expected, str | bytes) or expected in (str, bytes):
        return raw
    try:
        return loads_json(raw)
    except DecodeError as exc:
        raise AssertionError(
            f"expected {_show(expected)}, got a message that is not JSON: {_show(raw)} ({exc})"
        ) from None


def _differences(expected: object, got: object) -> list[str]:
    """Field by field, for two dicts or two attrs instances of the same class."""
    if attrs.has(type(expected)) and type(expected) is type(got):
        expected = attrs.asdict(expected, recurse=False)  # type: ignore[arg-type]
        got = attrs.asdict(got, recurse=False)  # type: ignore[arg-type]
    if not (isinstance(expected, dict) and isinstance(got, dict)):
        return []
    lines = []
    for key in expected:
        if key not in got:
            lines.append(f"{key!r}: missing (expected {_show(expected[key])})")
        elif expected[key] != got[key]:
            lines.append(f"{key!r}: expected {_show(expected[key])}, got {_show(got[key])}")
    lines.extend(f"{key!r}: not expected (got {_show(got[key])})" for key in got if key not in expected)
    return lines


def _matches(expected: object, got: object) -> bool:
    if isinstance(expected, type):
        return isinstance(got, expected)
    return bool(expected == got)


async def expect_message(
    ws: Receiver,
    expected: object,
    *,
    codec: MessageCodec[Any] | None = None,
    timeout: float = 1.0,  # noqa: ASYNC109 - the bound is part of what is asserted
) -> Any:
    """Receive the next message and assert that it equals *expected*.

    How the message is compared depends on *expected*:

    * with ``codec``, the message is decoded with it and compared to ``expected`` (a typed message);
    * a ``str`` or ``bytes`` is compared to the raw message (a text frame never equals bytes);
    * anything else (a dict, a list, a number, None) is compared to the message parsed as JSON.

    ``expected`` may be a class instead, to accept any message of that type (``dict``, ``bytes``,
    ``chat.Welcome`` with a codec), and may contain :data:`unittest.mock.ANY` for parts that do not
    matter: ``{"type": "error", "reason": ANY}``. Cancelling it loses no message.

    Args:
        ws: the connection (a :class:`~trionos.WebSocket` or a
            :class:`~trionos.testing.RawPeer`).
        expected: the message, or its class.
        codec: decodes the message before comparing (a typed protocol).
        timeout: seconds to wait, on trio's clock (so virtual under ``MockClock``).

    Returns:
        The message as compared: decoded with *codec*, parsed as JSON, or raw.

    Raises:
        AssertionError: nothing arrives in time, the connection closes first, the message does
            not decode, or it differs (the message shows both values and the differing fields).
    """
    raw = await _receive(ws, timeout, f"the message {_show(expected)}")
    got = _interpret(raw, expected, codec)
    if not _matches(expected, got):
        message = f"unexpected message\n  expected: {_show(expected)}\n  got:      {_show(got)}"
        differences = _differences(expected, got)
        if differences:
            message += "\n  differences:\n" + "\n".join(f"    {line}" for line in differences)
        raise AssertionError(message)
    return got


async def expect_silence(ws: Receiver, *, timeout: float = 1.0) -> None:  # noqa: ASYNC109
    """Assert that no message arrives and the connection stays open for *timeout* seconds.

    On ``MockClock`` with autojump the wait is virtual and ends as soon as every task is blocked;
    on real sockets it takes *timeout* seconds of wall-clock time, so keep it short there.

    Args:
        ws: the connection.
        timeout: seconds of silence to wait for, on trio's clock.

    Raises:
        AssertionError: a message arrives (it is consumed and shown) or the connection closes.
    """
    with trio.move_on_after(timeout):
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            raise AssertionError(f"expected silence for {timeout:g} s, but the {exc}") from None
        raise AssertionError(f"expected silence for {timeout:g} s, got the message {_show(raw)}")


async def expect_closed(
    ws: Receiver,
    code: int | None = None,
    *,
    timeout: float = 1.0,  # noqa: ASYNC109 - the bound is part of what is asserted
) -> ConnectionClosed:
    """Assert that the connection closes (with *code*, if given) within *timeout* seconds.

    A message that arrives first fails the assertion: read what you expect before calling this.

    Args:
        ws: the connection.
        code: the close code expected (None: any).
        timeout: seconds to wait, on trio's clock.

    Returns:
        The :class:`~trionos.ConnectionClosed`, for further checks (``.reason``).

    Raises:
        AssertionError: it stays open, closes with another code, or a message arrives first.
    """
    waiting_for = "the connection to close" if code is None else f"the connection to close with {code}"
    try:
        with trio.fail_after(timeout):
            raw = await ws.recv()
    except trio.TooSlowError:
        raise AssertionError(f"expected {waiting_for} within {timeout:g} s, but it stayed open") from None
    except ConnectionClosed as exc:
        if code is not None and exc.code != code:
            raise AssertionError(f"expected {waiting_for}, but the {exc}") from None
        return exc
    raise AssertionError(f"expected {waiting_for}, got the message {_show(raw)}")
