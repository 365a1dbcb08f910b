"""A room's feed: the bounded channel its broadcasts wait in, and the fan-out that writes them.

Broadcasts are not written by the task that makes them: ``put`` hands the frame and its
recipients to the room's memory channel and returns. The room's fan-out task wakes, gives the
tasks that are runnable a few scheduler ticks to add more (it stops as soon as a tick brings
nothing), then writes everything queued in one synchronous pass. The frames of a batch (up to
:data:`BATCH_BYTES`) are joined per recipient: a burst of messages costs each recipient one write
instead of one per message, whether they all go to the same recipients (one frame for all) or
each to everyone but its sender, as in a chat room (each member gets the frames meant for it;
members that get the same frames share the write). The load generator on the other end saves
as much.

Order is kept three ways:

* frames leave the channel in the order they were put;
* when a recipient's socket and outbox are both full, the fan-out stops at that write (a
  *stall*) and waits for the slow client under the hub's policy before it writes anything else,
  so nothing overtakes it (members written to before it in the same batch may already have
  frames that follow the stalled one: each recipient's frames keep their order);
* a direct write on a member connection (``ws.send``, a pong, a close) first calls
  :meth:`Feed.flush` on the rooms of that client, so what a task broadcast before it sends
  directly still arrives first, as if the broadcast had been written at once.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

__all__ = ["BATCH_BYTES", "GATHER_TICKS", "Feed", "SlowClientPolicy"]

C = TypeVar("C", bound=Hashable)

#: The default bytes of frames a feed holds (beside its ``queue_size`` broadcasts; the hub's
#: ``room_queue_bytes``): beyond it ``put`` waits and ``put_nowait`` raises ``WouldBlock``; one
#: larger frame is taken when the feed is empty.
FEED_MAX_BYTES = 4 * 1024 * 1024
#: The frames of a batch are joined per recipient into one write up to this many bytes (a single
#: larger frame is written alone).
BATCH_BYTES = 16 * 1024

#: At most this many scheduler ticks are spent gathering a batch; gathering ends earlier at the
#: first tick that brings nothing new, so a lone broadcast waits one tick.
GATHER_TICKS = 4


class SlowClientPolicy(enum.Enum):
    """What the fan-out does when a client's outbox is full.

    Set per hub (``Hub(policy=...)``) or per room (:meth:`Hub.set_room_policy
    <trionos.Hub.set_room_policy>`); a string such as ``"drop_oldest"`` names a member.

    ``DISCONNECT`` (the default): wait for room in the outbox. The wait holds the room's fan-out,
    so its channel fills and senders wait too (backpressure reaches them through TCP). The waits
    for one client add up: once the room has waited for it the hub's ``grace`` period in total
    (default 2 s), it is closed with code 1008 and a reason that says so, however slowly it
    keeps reading; the room goes on at full speed. The sum starts again once the room has gone
    a whole ``grace`` period without waiting for that client, or when it had room at once while
    the room waited for another member. A client that falls behind a burst and catches up is not
    dropped, and members that are all equally slow just pace the room.

    ``DROP_OLDEST``: never wait. The oldest queued messages for that client are dropped to make
    room for the new one (for live feeds where only fresh data matters).
    """

    DISCONNECT = "disconnect"
    DROP_OLDEST = "drop_oldest"


#: Writes a frame to recipients without waiting; returns those the policy must wait for.
DeliverNow = Callable[["Feed[C]", bytes, tuple[C, ...]], tuple[C, ...]]

#: Waits (under the policy) until a slow client takes a frame, or drops the client.
WaitForRoom = Callable[[C, bytes], Awaitable[None]]


class Feed(Generic[C]):
    """A room's feed: its bounded channel of ``(frame, recipients)`` and the state of its fan-out.

    The hub keeps one per room with members (and one for ``broadcast_all``); this is the one
    structure the hub and the docs call a room's *feed*.

    Bound: the channel holds ``queue_size`` broadcasts and ``max_bytes`` bytes of frames
    (one larger frame when it is empty); :meth:`put` waits beyond either, and :meth:`put_nowait`
    raises :class:`trio.WouldBlock`. The fan-out holds at most one more
    (taken off the channel to see whether it joins the current batch) and the batch it is
    writing.

    Args:
        name: the room's name (for logs).
        queue_size: the broadcasts the channel holds.
        policy: the slow-client policy the hub applies to this room.
        max_bytes: the bytes of frames the channel holds.
    """

    def __init__(
        self, name: str, queue_size: int, policy: SlowClientPolicy, max_bytes: int = FEED_MAX_BYTES
    ) -> None:
        self.name = name
        self._max_bytes = max_bytes
        #: The slow-client policy for this room (the hub's, or the room's own).
        self.policy = policy
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, tuple[C, ...]]](queue_size)
        self._queue_size = queue_size
        #: Broadcasts accepted (on the channel or in a sender's hands) and not yet taken off it.
        self.pending = 0
        #: Bytes of the frames of those broadcasts.
        self.pending_bytes = 0
        self._held: tuple[bytes, tuple[C, ...]] | None = None
        # The writes of the batch being delivered, last first: (frames, recipients, how many).
        self._writes: list[tuple[bytes, tuple[C, ...], int]] = []
        self._stalled: tuple[bytes, tuple[C, ...]] | None = None
        self._ended = False
        #: Whether the fan-out task has ended: nothing put from now on is written.
        self.stopped = False
        #: How many broadcasts the write being delivered joins (for the hub's message counter).
        self.batch_messages = 1
        self._wakeup = trio.Event()
        #: Set (and replaced) when the fan-out takes a broadcast off the channel, while a producer
        #: waits in :meth:`wait_for_room`.
        self._freed: trio.Event | None = None

    # --- producers ---------------------------------------------------------------------------

    async def put(self, frame: bytes, recipients: tuple[C, ...]) -> bool:
        """Queue a broadcast, waiting while the channel is full (backpressure to the sender).

        Args:
            frame: the encoded frame.
            recipients: who gets it.

        Returns:
            True once queued; False, having dropped the broadcast, when the fan-out has ended:
            its hub stopped (a goodbye broadcast from a handler that is being shut down lands
            here) or the room closed while this waited. Nobody is left to write it, and its
            recipients are leaving.
        """
        if self.stopped:
            return False
        while self.pending_bytes and self.pending_bytes + len(frame) > self._max_bytes and not self.stopped:
            if self._freed is None:
                self._freed = trio.Event()
            await self._freed.wait()  # the fan-out takes broadcasts off: bytes free up
        if self.stopped:
            return False
        self.pending += 1
        self.pending_bytes += len(frame)
        # Woken first: by the time the fan-out runs, the frame is on the channel (or in this
        # task's hands while the channel is full, where the fan-out takes it from).
        self._wakeup.set()
        try:
            await self._send.send((frame, recipients))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.pending -= 1
            self.pending_bytes -= len(frame)
            return False
        except BaseException:
            self.pending -= 1
            self.pending_bytes -= len(frame)
            raise
        return True

    def put_nowait(self, frame: bytes, recipients: tuple[C, ...]) -> None:
        """Queue a broadcast without waiting.

        Args:
            frame: the encoded frame.
            recipients: who gets it.

        Raises:
            trio.WouldBlock: the channel is full (broadcasts or bytes).
            trio.ClosedResourceError: the feed is closed.
        """
        if self.pending_bytes and self.pending_bytes + len(frame) > self._max_bytes:
            raise trio.WouldBlock
        self._send.send_nowait((frame, recipients))
        self.pending += 1
        self.pending_bytes += len(frame)
        self._wakeup.set()

    def has_room(self, more: int, size: int = 0) -> bool:
        """Whether the channel would take *more* broadcasts (of *size* bytes in all) now without
        waiting (or has stopped).

        Args:
            more: how many broadcasts are about to arrive.
            size: their bytes.

        Returns:
            True when they fit beside what the channel holds, or when the fan-out has stopped.
        """
        if self.stopped:
            return True
        # (One frame larger than the bound fits an empty feed, as in put.)
        fits = self.pending_bytes + size <= self._max_bytes or (not self.pending_bytes and more <= 1)
        return fits and self._send.statistics().current_buffer_used + more <= self._queue_size

    async def wait_for_room(self, more: Callable[[], int]) -> None:
        """Wait until the channel has room for ``more()`` broadcasts (backpressure without a put).

        For a producer whose broadcasts reach the channel later, through :meth:`put_nowait` (a
        room with its history in a shared broker): it waits here, as :meth:`put` would, for the
        fan-out to take broadcasts off the channel. It returns without a checkpoint after its last
        look, so the caller can count its broadcast as expected before another producer looks.
        Cancelling it is safe (nothing was queued).

        Args:
            more: how many broadcasts are about to arrive, asked again after each wake-up.
        """
        # The checkpoint comes first: once the room is there, return without another await, so
        # the caller can claim it before any other producer looks.
        await trio.lowlevel.checkpoint()
        while not self.has_room(more()):
            if self._freed is None:
                self._freed = trio.Event()
            await self._freed.wait()

    def close(self) -> None:
        """No more broadcasts: the fan-out writes what is queued, then ends."""
        self._send.close()
        self._wakeup.set()

    # --- writing -----------------------------------------------------------------------------

    def flush(self, deliver_now: DeliverNow[C]) -> None:
        """Write every queued broadcast now, in order, unless a slow client holds the room.

        Synchronous: no await, no task switch. Stops at a stall; the fan-out task resumes there.

        Args:
            deliver_now: writes a frame without waiting and returns the recipients to wait for.
        """
        while self._stalled is None:
            if not self._writes:
                if not self.pending and self._held is None:
                    return
                self._writes = self._next_batch()
                if not self._writes:
                    return
            frame, recipients, count = self._writes.pop()
            self.batch_messages = count
            slow = deliver_now(self, frame, recipients)
            if slow:
                self._stalled = (frame, slow)
                self._wakeup.set()  # flushed from another task: the fan-out must wait this out

    def _next_batch(self) -> list[tuple[bytes, tuple[C, ...], int]]:
        """Take the next batch off the channel: its writes, last first, and how many frames each joins.

        Broadcasts are taken while their bytes stay within :data:`BATCH_BYTES` (a larger one
        alone). When they all go to the same recipients, that is one frame for all of them; else
        each recipient gets the frames meant for it, in order, in one write (recipients that get
        the same frames share it): a room where everyone talks, each message to everyone but
        its sender, costs each member one write per batch instead of one per message.
        """
        first = self._held if self._held is not None else self._take()
        self._held = None
        if first is None:
            return []
        frame, recipients = first
        batch = [first]
        size = len(frame)
        same = True
        while size < BATCH_BYTES and self.pending:
            item = self._take()
            if item is None:
                break
            if size + len(item[0]) > BATCH_BYTES:
                self._held = item
                break
            batch.append(item)
            size += len(item[0])
            same = same and (item[1] is recipients or item[1] == recipients)
        if same:
            joined = frame if len(batch) == 1 else b"".join(item[0] for item in batch)
            return [(joined, recipients, len(batch))]
        # Which broadcasts of the batch each recipient gets (by position), in order...
        picks: dict[C, list[int]] = {}
        for index, (_, among) in enumerate(batch):
            for recipient in among:
                picked = picks.get(recipient)
                if picked is None:
                    picks[recipient] = [index]
                else:
                    picked.append(index)
        # ...and the recipients that get the same ones, who share a write.
        sharing: dict[tuple[int, ...], list[C]] = {}
        for recipient, picked in picks.items():
            sharing.setdefault(tuple(picked), []).append(recipient)
        writes = [
            (b"".join(batch[index][0] for index in picked), tuple(group), len(picked))
            for picked, group in sharing.items()
        ]
        writes.reverse()  # taken from the end
        return writes

    def _take(self) -> tuple[bytes, tuple[C, ...]] | None:
        try:
            item = self._receive.receive_nowait()
        except trio.WouldBlock:
            return None
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._ended = True
            return None
        self.pending -= 1
        self.pending_bytes -= len(item[0])
        if self._freed is not None:
            self._freed.set()
            self._freed = None
        return item

    async def run(
        self, deliver_now: DeliverNow[C], wait_for_room: WaitForRoom[C], on_exit: Callable[[], None]
    ) -> None:
        """The fan-out task: wake on a broadcast, gather a batch, write it, wait out stalls.

        Cancelled (the hub is stopping), it still writes what is queued as far as the sockets
        take it without waiting, unless a slow client holds the room; broadcasts put after that
        are dropped (:meth:`put` returns False).

        Args:
            deliver_now: writes a frame without waiting; returns the recipients to wait for.
            wait_for_room: waits (under the policy) until a slow recipient takes a frame.
            on_exit: called when the task ends, however it ends.
        """
        try:
            async with self._receive:
                try:
                    await self._fan_out(deliver_now, wait_for_room)
                finally:
                    # Synchronous, before the channel closes: nothing can be put in between.
                    self.stopped = True
                    if self._freed is not None:  # producers waiting for room: nothing will come
                        self._freed.set()
                    if self._stalled is None:
                        self.flush(deliver_now)
        finally:
            on_exit()

    async def _fan_out(self, deliver_now: DeliverNow[C], wait_for_room: WaitForRoom[C]) -> None:
        while not self._ended:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self._gather()
            while True:
                self.flush(deliver_now)
                if self._stalled is None:
                    break
                frame, slow = self._stalled
                for client in slow:
                    await wait_for_room(client, frame)
                self._stalled = None
            if not self.pending and self._held is None and not self._writes and self._send_closed():
                return

    async def _gather(self) -> None:
        for _ in range(GATHER_TICKS):
            before = self.pending
            if before >= self._queue_size:
                return
            await trio.lowlevel.checkpoint()
            if self.pending == before:
                return

    def _send_closed(self) -> bool:
        return self._ended or self._receive.statistics().open_send_channels == 0
