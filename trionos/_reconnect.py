"""Reconnecting clients: :func:`connect_with_retry` and :func:`run_reconnecting`.

Thin Trio layers over :func:`trionos.connect` and the pure :class:`~trionos._backoff.Backoff`
schedule. Neither opens a nursery of its own: the connection's tasks live in ``connect``'s nursery,
and ``on_connect`` runs in the caller's task, so cancelling the caller cancels everything.

Which endings are retried:

* the connection could not be opened: :class:`HandshakeError` (which includes
  :class:`ConnectTimeout` and :class:`ConnectionRejected`) or ``OSError``;
* the connection ended with a close code in ``retry_on_close`` (default :data:`RETRY_CLOSE_CODES`:
  1001 going away, 1006 dropped, 1011 server error or heartbeat timeout, 1012 restart, 1013 try
  again later).

Anything else ends the loop: a normal close (1000), a policy close (1008, 4000-4999) or any other
code is returned, and an exception from the application propagates unchanged.

Resuming subscriptions: :class:`Positions` remembers, per room, the position of the last message
a client received, so that ``on_connect`` can ask the server to replay what was missed
(``since=positions.since(room)``) and drop anything it already has. See ``docs/recovery.md``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import trio

from ._backoff import Backoff
from ._client import connect as _connect
from ._connection import WebSocket
from ._errors import ConnectionClosed, HandshakeError
from ._history import Position
from ._lazy import TrionosDeprecationWarning

__all__ = ["RETRY_CLOSE_CODES", "Connect", "Positions", "connect_with_retry", "run_reconnecting"]

logger = logging.getLogger("trionos.reconnect")

#: Close codes after which :func:`run_reconnecting` reconnects by default: the server went away
#: (1001), the connection dropped (1006), the server failed or stopped answering heartbeats (1011),
#: is restarting (1012) or is overloaded (1013). (1014 "bad gateway" cannot arrive: wsproto
#: reports it as a protocol error, 1002.)
RETRY_CLOSE_CODES: frozenset[int] = frozenset({1001, 1006, 1011, 1012, 1013})

#: What opens one connection: called as ``connect(url, **connect_options)``, returns an async
#: context manager that yields a :class:`WebSocket`. :func:`trionos.connect` by default;
#: ``MemoryServer.connect`` from :mod:`trionos.testing` fits too (the "url" is then a path).
Connect = Callable[..., AbstractAsyncContextManager[WebSocket]]

#: The errors that mean "this attempt to connect failed; another one may succeed".
_CONNECT_ERRORS = (HandshakeError, OSError)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _as_close(exc: BaseException) -> ConnectionClosed | None:
    """``exc`` as one close: itself, or the first of a group made only of closes (else None).

    An ``on_connect`` that runs tasks in a nursery raises its ``ConnectionClosed`` inside an
    exception group; it still means "the connection closed". A group with anything else in it
    (a bug, ``Cancelled``) is not a close and propagates.
    """
    if isinstance(exc, ConnectionClosed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        closes, rest = exc.split(ConnectionClosed)
        if rest is None and closes is not None:
            return _as_close(closes.exceptions[0])
    return None


def _check_attempts(value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be a whole number of at least 1, got {value!r}")


def connect_with_retry(
    url: str,
    max_attempts: int | None = None,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 30.0,
    backoff: Backoff | None = None,
    connect: Connect = _connect,
    max_retries: int | None = None,
    **connect_options: Any,
) -> AbstractAsyncContextManager[WebSocket | None]:
    """Open a WebSocket, trying up to *max_attempts* times; yield it, or ``None`` if every try failed.

    ``async with trionos.connect_with_retry(url, 5) as ws:`` then ``if ws is None: ...``

    An attempt fails with :exc:`~trionos.HandshakeError` (including
    :exc:`~trionos.ConnectTimeout` and :exc:`~trionos.ConnectionRejected`) or ``OSError``; each
    failure is logged as a warning on the ``trionos.reconnect`` logger and followed by a delay
    from the schedule. There is no delay after the last attempt. Only opening the connection is
    retried: once the block runs, exceptions from it propagate unchanged and the connection is
    closed (1000) as :func:`trionos.connect` does.

    Cancellation: cancelling during an attempt or a delay stops at once (nothing is open); inside
    the block it behaves as :func:`trionos.connect`.

    Args:
        url: the server's ``ws://`` or ``wss://`` URL (or what *connect* takes instead).
        max_attempts: the total number of attempts (at least 1).
        initial_delay: the first delay's upper bound, in seconds, when *backoff* is not given.
        max_delay: the longest delay, in seconds, when *backoff* is not given.
        backoff: the delay schedule (it is reset first); by default exponential with full jitter
            from *initial_delay* up to *max_delay*.
        connect: what opens one connection, called as ``connect(url, **connect_options)`` and
            returning an async context manager that yields a WebSocket; :func:`trionos.connect`
            by default.
        max_retries: the old name of *max_attempts* (it always counted attempts); deprecated,
            warns with :exc:`~trionos.TrionosDeprecationWarning`.
        **connect_options: passed to *connect*, e.g. ``options=ClientOptions(connect_timeout=3)``
            or ``connect_timeout=3`` (which bounds each attempt).

    Returns:
        An async context manager yielding the open :class:`~trionos.WebSocket`, or ``None``.

    Raises:
        TypeError: *max_attempts* is missing, or given together with *max_retries*.
        ValueError: *max_attempts* is not a whole number of at least 1.
    """
    if max_retries is not None:
        if max_attempts is not None:
            raise TypeError("connect_with_retry() takes max_attempts or max_retries, not both")
        warnings.warn(
            "connect_with_retry(max_retries=...) is deprecated and will be removed in 0.3; "
            "use max_attempts=... (the same number: it always counted attempts)",
            TrionosDeprecationWarning,
            stacklevel=2,
        )
        max_attempts = max_retries
    if max_attempts is None:
        raise TypeError("connect_with_retry() missing required argument: 'max_attempts'")
    _check_attempts(max_attempts)
    schedule = backoff if backoff is not None else Backoff(initial=initial_delay, maximum=max_delay)
    return _connected_with_retry(url, max_attempts, schedule, connect, connect_options)


@asynccontextmanager
async def _connected_with_retry(
    url: str, attempts: int, schedule: Backoff, connect: Connect, connect_options: dict[str, Any]
) -> AsyncIterator[WebSocket | None]:
    schedule.reset()
    async with AsyncExitStack() as stack:
        yield await _open_with_retry(stack, url, attempts, schedule, connect, connect_options)


async def _open_with_retry(
    stack: AsyncExitStack,
    url: str,
    attempts: int,
    schedule: Backoff,
    connect: Connect,
    connect_options: dict[str, Any],
) -> WebSocket | None:
    """Enter ``connect(url)`` on ``stack``, up to ``attempts`` times; None once all have failed."""
    for attempt in range(1, attempts + 1):
        try:
            return await stack.enter_async_context(connect(url, **connect_options))
        except _CONNECT_ERRORS as exc:
            error = exc
        # Outside the ``except``, so that a cancellation while sleeping is not chained to the failure.
        if attempt == attempts:
            break
        delay = schedule.next_delay()
        logger.warning("connection to %s failed (%s), retrying in %.3g s", url, _describe(error), delay)
        await trio.sleep(delay)
    logger.warning(
        "connection to %s failed (%s), giving up after %d attempts", url, _describe(error), attempts
    )
    return None


async def run_reconnecting(
    url: str,
    on_connect: Callable[[WebSocket], Awaitable[object]],
    *,
    backoff: Backoff | None = None,
    max_attempts: int | None = None,
    retry_on_close: Container[int] = RETRY_CLOSE_CODES,
    stable_after: float = 5.0,
    connect: Connect = _connect,
    **connect_options: Any,
) -> int | None:
    """Stay connected to *url*: run ``await on_connect(ws)`` on each new connection until done.

    ``on_connect`` runs once per connection, in the caller's task; re-send whatever the server must
    know (log in, join a room) at its start. What happens next depends on how it ends:

    * it returns while the connection is still open: done. The connection is closed with 1000 and
      ``None`` returned.
    * the connection ends with a close code (``on_connect`` raises
      :exc:`~trionos.ConnectionClosed`, also inside an exception group from a nursery if nothing
      else is in it, or returns after the connection closed, as ``async for message in ws`` does
      on 1000 and 1001): if the code is in *retry_on_close* it reconnects, otherwise the code is
      returned (1000 normal, 1008 policy, 4000-4999 application codes, ...).
    * the connection cannot be opened (:exc:`~trionos.HandshakeError`, ``OSError``): it tries
      again.
    * any other exception from ``on_connect`` propagates unchanged (after the connection is closed
      with 1000); a bug in the handler is not retried.

    Between attempts it sleeps (``trio.sleep``) for a delay from *backoff* and logs why as a
    warning on the ``trionos.reconnect`` logger. A connection that stayed open for at least
    *stable_after* seconds resets the schedule and the count of failures, so the first retry after
    a long session comes quickly while a server that accepts and then fails at once is still backed
    off from. See ``docs/reconnecting.md``.

    Cancellation: cancelling ``run_reconnecting`` cancels the current ``on_connect`` and closes its
    connection with 1000 (waiting at most ``close_timeout``), or interrupts the current attempt or
    delay; nothing is left running and ``Cancelled`` propagates.

    Args:
        url: the server's ``ws://`` or ``wss://`` URL (or what *connect* takes instead).
        on_connect: ``async def on_connect(ws)``, run on each new connection.
        backoff: the delay schedule (default ``Backoff()``: full jitter, 1 s doubling up to 30 s).
            It is reset at the start and holds this run's state: do not share one between
            concurrent runs.
        max_attempts: how many attempts in a row may fail (default: no limit), counting failed
            connects and connections closed with a retried code; a stable connection starts the
            count again.
        retry_on_close: the close codes to reconnect after (default
            :data:`~trionos.RETRY_CLOSE_CODES`: 1001, 1006, 1011, 1012 and 1013); e.g.
            ``RETRY_CLOSE_CODES | {4000}`` or ``range(4000, 5000)``.
        stable_after: seconds a connection must stay open to count as stable (5).
        connect: what opens one connection, called as ``connect(url, **connect_options)`` and
            returning an async context manager that yields a WebSocket; :func:`trionos.connect`
            by default, :meth:`MemoryServer.connect <trionos.testing.MemoryServer.connect>` in
            tests.
        **connect_options: passed to *connect*, e.g. ``options=ClientOptions(...)``, or keywords
            such as ``heartbeat`` or ``connect_timeout``.

    Returns:
        ``None`` once ``on_connect`` returned with the connection open, or the close code that
        ended the connection when it is not retried.

    Raises:
        HandshakeError: the last failure, once *max_attempts* attempts in a row have failed (also
            ``OSError`` or :exc:`~trionos.ConnectionClosed`, whichever ended the last attempt),
            with a note saying so.
        ValueError: *max_attempts* is not a whole number of at least 1, or *stable_after* is
            negative.
    """
    _check_attempts(max_attempts)
    if not stable_after >= 0:
        raise ValueError(f"stable_after must be 0 or more seconds, got {stable_after!r}")
    schedule = backoff if backoff is not None else Backoff()
    schedule.reset()
    failures = 0
    while True:
        connected_at = math.nan
        try:
            async with connect(url, **connect_options) as ws:
                connected_at = trio.current_time()
                await on_connect(ws)
                code, reason = ws.close_code, ws.close_reason
        except _CONNECT_ERRORS as exc:
            if not math.isnan(connected_at):
                raise  # from on_connect itself, not from opening the connection
            error: BaseException = exc
            what = "failed"
        except (ConnectionClosed, BaseExceptionGroup) as exc:
            closed = _as_close(exc)
            if closed is None:
                raise
            error, what = closed, "closed"
        else:
            if code is None:
                return None
            error, what = ConnectionClosed(code, reason or ""), "closed"
        if isinstance(error, ConnectionClosed) and error.code not in retry_on_close:
            logger.info("connection to %s ended (%s), not reconnecting", url, _describe(error))
            return int(error.code)

        if trio.current_time() - connected_at >= stable_after:  # False while connected_at is nan
            schedule.reset()
            failures = 0
        failures += 1
        if max_attempts is not None and failures >= max_attempts:
            logger.warning(
                "connection to %s %s (%s), giving up after %d attempts", url, what, _describe(error), failures
            )
            error.add_note(f"run_reconnecting gave up after {failures} attempts in a row to reach {url}")
            raise error
        delay = schedule.next_delay()
        logger.warning("connection to %s %s (%s), retrying in %.3g s", url, what, _describe(error), delay)
        await trio.sleep(delay)


#: The most offsets :class:`Positions` remembers beyond a gap, per room, while it waits for the
#: gap to be filled; beyond that it gives the gap up (its position jumps to the newest seen).
MAX_AHEAD = 1024


@attrs.define
class _Track:
    """One room's bookkeeping: the last offset of the unbroken run seen, and what is beyond it."""

    position: Position
    #: Offsets seen (or our own, acknowledged) beyond a gap after ``position``.
    ahead: set[int] = attrs.field(factory=set)
    #: After a recovering welcome: the replay covers every offset up to this one.
    replay_to: int | None = None
    #: A gap or a new epoch was noticed and :meth:`Positions.recovery_due` has not said so yet.
    due: bool = False
    #: :meth:`Positions.recovery_due` said so for the gap still open: say it once, not again for
    #: every message that arrives beyond it before the rejoin's welcome.
    reported: bool = False


class Positions:
    """The last position seen per room: what a reconnecting client needs to resume without a gap.

    Keep one for the whole life of a client (outside ``on_connect``) and, on each connection::

        await ws.send_message(Join(name, room, since=positions.since(room)), CLIENT_CODEC)
        ...
        case Welcome(epoch=epoch, offset=offset, recovered=recovered) if epoch is not None:
            positions.welcome(room, Position(epoch, offset), recovered)
        case Message(offset=offset, epoch=epoch) if offset is not None:
            if not positions.receive(room, offset, epoch):
                continue  # already seen
            ...  # show it, then:
            if (since := positions.recovery_due(room)) is not None:
                await ws.send_message(Join(name, room, since=since), CLIENT_CODEC)  # fill the gap
        case Ack(offset=offset) if offset is not None:
            positions.own(room, offset)  # the server never sends us our own messages

    Live messages are checked too: one whose ``epoch`` differs from the position's means the
    room's history restarted (an eviction, a Redis restart), and one whose offset skips ahead
    means a message was missed (a dropped subscription). Either is shown (``receive`` is True),
    and :meth:`recovery_due` then gives the position to rejoin with: the server replays what was
    missed, and what was already shown is not shown twice.

    Bounds: one position per room ever tracked (:meth:`forget` a room you leave for good), and at
    most ``MAX_AHEAD`` offsets per room beyond a gap. Pure bookkeeping: no I/O, no clock.
    """

    def __init__(self) -> None:
        self._rooms: dict[str, _Track] = {}

    def __repr__(self) -> str:
        return f"<trionos.Positions {self._positions()!r}>"

    def _positions(self) -> dict[str, Position]:
        return {room: track.position for room, track in self._rooms.items()}

    def since(self, room: str) -> Position | None:
        """The position to send when (re)joining *room*.

        Args:
            room: the room's name.

        Returns:
            The last position seen in *room* with nothing missing before it, or None before its
            first welcome.
        """
        track = self._rooms.get(room)
        return None if track is None else track.position

    def welcome(self, room: str, latest: Position, recovered: bool | None) -> None:
        """Record the server's answer to a join.

        Args:
            room: the room's name.
            latest: the room's latest position, from the welcome.
            recovered: None (the join did not ask to recover): continue from *latest*. True: the
                missed messages follow, continue from where we were. False: what follows is all
                the server still has (the epoch changed or the history was trimmed): take every
                message of the room's current epoch that arrives.
        """
        track = self._rooms.get(room)
        if recovered is None or track is None:
            self._rooms[room] = _Track(latest)
        elif recovered and track.position.epoch == latest.epoch:
            track.replay_to = latest.offset
            track.reported = False
        else:
            same = track.position.epoch == latest.epoch
            self._rooms[room] = _Track(
                Position(latest.epoch, 0), track.ahead if same else set(), latest.offset
            )

    def receive(self, room: str, offset: int, epoch: str | None = None) -> bool:
        """Note that a message at *offset* (of *epoch*, when the server says) arrived in *room*.

        Args:
            room: the room's name.
            offset: the message's offset.
            epoch: the message's epoch, if it carries one: another epoch than the position's
                means the room's history restarted.

        Returns:
            True if it is new; False for one already seen: a duplicate, to be dropped. A room
            that was never welcomed accepts everything.
        """
        track = self._rooms.get(room)
        if track is None:
            return True
        if epoch is not None and epoch != track.position.epoch:
            # A new history: its offsets start again, and those before this one were missed.
            track = self._rooms[room] = _Track(Position(epoch, 0), due=offset > 1)
        if track.replay_to is not None and offset > track.replay_to:
            # The first message after a recovery's replay: everything up to it was covered.
            track.position = Position(track.position.epoch, max(track.position.offset, track.replay_to))
            track.replay_to = None
            track.reported = False  # that recovery is through: a hole left from here is a new gap
            _absorb(track)
        if offset <= track.position.offset or offset in track.ahead:
            return False
        if offset == track.position.offset + 1:
            track.position = Position(track.position.epoch, offset)
            _absorb(track)
            return True
        track.ahead.add(offset)
        if track.replay_to is None and not track.reported:
            track.due = True  # a live message skipped ahead: one was missed
        if len(track.ahead) > MAX_AHEAD:  # give the gap up
            track.position = Position(track.position.epoch, max(track.ahead))
            track.ahead.clear()
            track.due = track.reported = False
        return True

    def own(self, room: str, offset: int) -> None:
        """Note our own message at *offset* (from its ack): the server never sends it to us.

        Args:
            room: the room's name.
            offset: the acknowledged offset.
        """
        track = self._rooms.get(room)
        if track is not None and offset > track.position.offset:
            track.ahead.add(offset)
            _absorb(track)

    def recovery_due(self, room: str) -> Position | None:
        """The position to rejoin *room* with, once, after a gap or a new epoch was noticed.

        Args:
            room: the room's name.

        Returns:
            The last position with nothing missing before it (send it as ``since``), or None
            when nothing is missing or this was already said for the current gap.
        """
        track = self._rooms.get(room)
        if track is None or not track.due:
            return None
        track.due = False
        track.reported = True
        return track.position

    def forget(self, room: str) -> None:
        """Stop tracking *room* (the next join starts from the room's latest position).

        Args:
            room: the room's name.
        """
        self._rooms.pop(room, None)


def _absorb(track: _Track) -> None:
    """Move *track*'s position over the offsets seen just after it; forget those behind it."""
    ahead = track.ahead
    offset = track.position.offset
    while offset + 1 in ahead:
        offset += 1
        ahead.discard(offset)
    track.position = Position(track.position.epoch, offset)
    if ahead:
        track.ahead = {o for o in ahead if o > offset}
    if not track.ahead and track.replay_to is None:
        track.due = track.reported = False  # the gap is filled
