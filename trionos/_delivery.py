"""Slow-client delivery: writing a feed's frames to its recipients, and the policy for those behind.

A room's fan-out (:class:`~trionos._fanout.Feed`) calls :meth:`SlowClientDelivery.deliver_now`
for each batch: the frame goes straight into every recipient's socket
(:func:`~trionos._transport.write_each`), and a recipient that cannot take it at once is
*offered* it under the room's :class:`~trionos.SlowClientPolicy`: ``drop_oldest`` queues it,
dropping the oldest queued frames; ``disconnect`` queues it if the outbox has room, and
otherwise the fan-out waits in :meth:`SlowClientDelivery.wait_for_room`.

Stall accounting (``disconnect``): the seconds the fan-out waits for one client add up over its
stalls, however much it reads in between; the sum starts again from zero once the room has gone
a whole ``grace`` period without waiting for it, or when it had room at once while the room
waited for another client (it kept up). Once the sum reaches ``grace`` the client is closed with
1008. Bound: one ``(seconds, when)`` pair per client that made a room wait, forgotten when it
unregisters or is dropped.

Replays (:meth:`SlowClientDelivery.replay`): a join with history hands its frames here. They are
written at once as far as the client's transport takes them; under ``drop_oldest`` the rest too,
dropping the oldest queued frames as a live frame would. Under ``disconnect`` the rest waits in
the client's :class:`~trionos._replay.Backlog`, written by a task of its own as the client reads,
with the same stall accounting (a client that does not read its replay is closed with 1008 once
it has made its replay wait ``grace`` in total); every frame a feed fans out to that client
meanwhile queues behind the replay instead of being written, so no room waits on it and the
seam stays exact. Bound: at most ``max_behind`` bytes queue behind a replay (one larger frame
when none do); a frame beyond that closes the client with 1008 as well.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

import trio

from ._fanout import FEED_MAX_BYTES, Feed, SlowClientPolicy
from ._hub_protocols import HubConnection, HubTransport
from ._metrics import Metrics
from ._replay import Backlog
from ._transport import write_each

__all__ = ["SLOW_CLIENT_CLOSE_CODE", "Recipient", "SlowClientDelivery"]

logger = logging.getLogger("trionos.hub")

#: The close code sent to a client dropped by the ``disconnect`` policy (RFC 6455: policy violation).
SLOW_CLIENT_CLOSE_CODE = 1008


class Recipient(Hashable, Protocol):
    """What delivery needs from a recipient (the hub's :class:`~trionos.Client`)."""

    @property
    def ws(self) -> HubConnection: ...

    @property
    def transport(self) -> HubTransport: ...


R = TypeVar("R", bound=Recipient)


class SlowClientDelivery:
    """Writes frames to recipients and applies the slow-client policy, for every feed of one hub.

    Args:
        grace: the seconds in total a room waits for one slow client before closing it.
        metrics: counts messages and bytes out, frames dropped and slow-client disconnects.
        max_behind: the bytes of frames that may queue behind a client's replay.
    """

    def __init__(self, grace: float, metrics: Metrics, max_behind: int = FEED_MAX_BYTES) -> None:
        self.grace = grace
        self.metrics = metrics
        self.max_behind = max_behind
        # Per client that made a room wait: (seconds waited in this episode, when the last wait ended).
        self._stall_times: dict[Recipient, tuple[float, float]] = {}
        # Per client whose replay is being written: what is left of it, and what queued behind.
        self._backlogs: dict[Recipient, Backlog] = {}

    def forget(self, recipient: Recipient) -> None:
        """Drop what is known about *recipient* (it unregistered)."""
        self._stall_times.pop(recipient, None)
        self._end_backlog(recipient)

    @property
    def backlogs(self) -> int:
        """How many clients have a replay being written now."""
        return len(self._backlogs)

    @property
    def stalled(self) -> int:
        """How many clients have stall time on record now."""
        return len(self._stall_times)

    def deliver_now(self, feed: Feed[R], frame: bytes, recipients: tuple[R, ...]) -> tuple[R, ...]:
        """Write without waiting; return the recipients the room's policy says to wait for.

        Args:
            feed: the feed being fanned out (its policy and batch size).
            frame: the frame (or joined frames) every recipient gets.
            recipients: who gets it.

        Returns:
            The recipients whose outbox is full under ``disconnect``, least indebted first.
        """
        # Counted once per batch, not per recipient: two additions whatever the room's size.
        metrics = self.metrics
        metrics.messages_out += feed.batch_messages * len(recipients)
        metrics.bytes_out += len(frame) * len(recipients)
        if self._backlogs:
            recipients = self._behind_replays(recipients, frame)
        pending = write_each(recipients, frame)
        if not pending:
            return ()
        policy = feed.policy
        slow = tuple(c for c in pending if not self._offer(c, frame, policy))
        if len(slow) > 1 and self._stall_times:
            # Wait for the least indebted first: whoever has room by the time its turn comes
            # kept up and is cleared, so among equally slow clients the waits do not all land
            # on the one that joined first.
            slow = tuple(sorted(slow, key=self._debt))
        return slow

    def _behind_replays(self, recipients: tuple[R, ...], frame: bytes) -> tuple[R, ...]:
        """Queue *frame* behind the replays of the recipients that have one; return the others."""
        backlogs = self._backlogs
        others = []
        for recipient in recipients:
            backlog = backlogs.get(recipient)
            if backlog is None:
                others.append(recipient)
            elif backlog.behind and backlog.behind + len(frame) > self.max_behind:
                self._drop(recipient, f"slow client: over {self.max_behind} bytes behind its replay")
            else:
                backlog.queue(frame)
        return tuple(others)

    def _debt(self, recipient: Recipient) -> float:
        return self._stall_times.get(recipient, (0.0, 0.0))[0]

    def _offer(self, recipient: Recipient, frame: bytes, policy: SlowClientPolicy) -> bool:
        # The fast path: no await, no task switch. False only when the outbox is full.
        if recipient.ws.closed:
            # Its peer is gone or closing (a stream without a socket, TLS say, can look open
            # until its writer fails): drop the frame rather than queue it for nobody.
            return True
        transport = recipient.transport
        try:
            if policy is SlowClientPolicy.DROP_OLDEST:
                self.metrics.frames_dropped += transport.write_dropping_oldest(frame)
                return True
            return transport.write_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # gone: its handler is ending and will unregister it

    async def wait_for_room(self, recipient: Recipient, frame: bytes) -> None:
        """Wait for room in a slow client's outbox; drop it once the room has waited ``grace`` in total.

        See the module docstring for how the waits add up. Returns at once, without a
        checkpoint, when the outbox has room already.

        Args:
            recipient: the slow client.
            frame: the frame it must take.
        """
        write_nowait = recipient.transport.write_nowait
        await self._wait_until(recipient, lambda: write_nowait(frame))

    async def _wait_until(self, recipient: Recipient, attempt: Callable[[], bool]) -> None:
        """Wait until ``attempt()`` (a write without waiting) succeeds, or drop *recipient*.

        ``attempt`` is tried at once, then after each bit of progress of the client's transport;
        the waits add up per client (module docstring). Returns at once, without a checkpoint,
        when the first try succeeds or the connection is gone.
        """
        transport = recipient.transport
        # Try first: while the fan-out waited for another slow client of the same frame, this
        # one may have drained its outbox already, and then no progress would ever come. If so
        # it kept up while the room waited for another: its total starts again.
        try:
            if attempt():
                self._stall_times.pop(recipient, None)
                return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        started = trio.current_time()
        waited, last = self._stall_times.get(recipient, (0.0, -math.inf))
        if started - last > self.grace:
            waited = 0.0
        deadline = started + self.grace - waited
        try:
            while True:
                with trio.move_on_at(deadline) as wait:
                    await transport.wait_for_progress()
                if wait.cancelled_caught:
                    break
                try:
                    if attempt():
                        return
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
        finally:
            now = trio.current_time()
            self._stall_times[recipient] = (waited + now - started, now)
        self._drop(recipient)

    # --- replays ------------------------------------------------------------------------------

    def replay(
        self, recipient: Recipient, frames: list[bytes], policy: SlowClientPolicy, nursery: trio.Nursery
    ) -> None:
        """Write a replay's *frames* to *recipient*, ahead of any frame fanned out to it later.

        Never waits. What the transport takes now is written now; under ``disconnect`` the rest
        is written by a task started in *nursery* as the client reads (see the module docstring);
        under ``drop_oldest`` it is written now too, dropping the oldest queued frames. A replay
        for a client whose previous one is still being written goes behind it.

        Args:
            recipient: the joining client.
            frames: the frames, in order.
            policy: the slow-client policy of the room it joined.
            nursery: where the task that writes the rest runs.
        """
        metrics = self.metrics
        metrics.messages_out += len(frames)
        metrics.bytes_out += sum(map(len, frames))
        backlog = self._backlogs.get(recipient)
        if backlog is not None:
            backlog.replay(frames)
            return
        backlog = Backlog(metrics)
        backlog.replay(frames)
        transport = recipient.transport
        try:
            if policy is SlowClientPolicy.DROP_OLDEST:
                self.metrics.frames_dropped += backlog.pump_dropping_oldest(transport)
                return
            if backlog.pump(transport):
                return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            backlog.clear()  # gone: its handler is ending and will unregister it
            return
        self._backlogs[recipient] = backlog
        nursery.start_soon(self._write_backlog, recipient, backlog)

    def pump(self, recipient: Recipient) -> None:
        """Write what the transport takes now of *recipient*'s replay (before a direct write)."""
        backlog = self._backlogs.get(recipient)
        if backlog is not None:
            try:
                backlog.pump(recipient.transport)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the writing task ends the backlog at its next try

    async def _write_backlog(self, recipient: Recipient, backlog: Backlog) -> None:
        """The task that writes the rest of a replay (and what queued behind it) as the client reads."""
        transport = recipient.transport
        try:
            with backlog.scope:
                await self._wait_until(recipient, lambda: backlog.pump(transport))
        finally:
            # Synchronous after the last piece was written: a later frame goes straight out.
            if self._backlogs.get(recipient) is backlog:
                del self._backlogs[recipient]
            backlog.clear()

    def _end_backlog(self, recipient: Recipient) -> None:
        backlog = self._backlogs.pop(recipient, None)
        if backlog is not None:
            backlog.scope.cancel()
            backlog.clear()

    def _drop(self, recipient: Recipient, reason: str | None = None) -> None:
        self._stall_times.pop(recipient, None)
        self._end_backlog(recipient)
        self.metrics.slow_client_disconnects += 1
        reason = reason or f"slow client: outbox full for {self.grace:g} s in total"
        logger.warning("closing %r: %s", recipient, reason)
        recipient.ws.abort(SLOW_CLIENT_CLOSE_CODE, reason)
