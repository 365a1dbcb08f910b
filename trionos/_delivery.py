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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable
from typing import Protocol, TypeVar

import trio

from ._fanout import Feed, SlowClientPolicy
from ._hub_protocols import HubConnection, HubTransport
from ._metrics import Metrics
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
    """

    def __init__(self, grace: float, metrics: Metrics) -> None:
        self.grace = grace
        self.metrics = metrics
        # Per client that made a room wait: (seconds waited in this episode, when the last wait ended).
        self._stall_times: dict[Recipient, tuple[float, float]] = {}

    def forget(self, recipient: Recipient) -> None:
        """Drop what is known about *recipient* (it unregistered)."""
        self._stall_times.pop(recipient, None)

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
        transport = recipient.transport
        # Try first: while the fan-out waited for another slow client of the same frame, this
        # one may have drained its outbox already, and then no progress would ever come. If so
        # it kept up while the room waited for another: its total starts again.
        try:
            if transport.write_nowait(frame):
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
                    if transport.write_nowait(frame):
                        return
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
        finally:
            now = trio.current_time()
            self._stall_times[recipient] = (waited + now - started, now)
        self._drop(recipient)

    def _drop(self, recipient: Recipient) -> None:
        self._stall_times.pop(recipient, None)
        self.metrics.slow_client_disconnects += 1
        reason = f"slow client: outbox full for {self.grace:g} s in total"
        logger.warning("closing %r: %s", recipient, reason)
        recipient.ws.abort(SLOW_CLIENT_CLOSE_CODE, reason)
