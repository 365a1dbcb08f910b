"""A client's backlog: what a replay still has to write to it, and the frames queued behind it.

A join with history (:meth:`Hub.join_with_history <trionos.Hub.join_with_history>`) replays
what the client missed. The replay goes to the client's transport at once, as far as it takes
it without waiting (its socket, then its outbox up to ``max_outbox_bytes``), in pieces of at
most :data:`REPLAY_PIECE_BYTES`. Under the ``disconnect`` policy what does not fit waits in the
client's :class:`Backlog` and is written as the client reads (see
:meth:`SlowClientDelivery.replay <trionos._delivery.SlowClientDelivery.replay>`); every frame the
fan-out has for that client meanwhile queues behind it, in order. So the seam between the
replay and live frames stays exact, and no room's fan-out waits on a replay.

Pure bookkeeping: no await, no clock; writing goes through the transport's ``write_nowait`` or
``write_dropping_oldest``.

Bounds: a backlog holds the replayed frames (at most the room history's ``max_bytes``, which in
memory are the history's own bytes objects, not copies) plus the frames queued behind them,
which its owner bounds (the hub: ``room_queue_bytes``). Their bytes are counted in
:attr:`Metrics.backlog_bytes_open <trionos.Metrics.backlog_bytes_open>`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable

import trio

from ._hub_protocols import HubTransport
from ._metrics import Metrics

__all__ = ["REPLAY_PIECE_BYTES", "Backlog"]

#: The most bytes of frames one piece of a replay joins (a larger frame is a piece alone).
REPLAY_PIECE_BYTES = 64 << 10


class Backlog:
    """One client's frames not yet written: a replay's rest, then what arrived behind it.

    Args:
        metrics: where its bytes are counted (``backlog_bytes_open``).
    """

    __slots__ = ("_frames", "_metrics", "_piece", "behind", "scope", "size")

    def __init__(self, metrics: Metrics) -> None:
        # (frame, queued behind a replay), oldest first.
        self._frames: deque[tuple[bytes, bool]] = deque()
        self._metrics = metrics
        # The next piece, joined once (the front of the deque only changes by writing it).
        self._piece: tuple[bytes, int] | None = None
        #: Bytes of every frame waiting.
        self.size = 0
        #: Bytes of the frames queued behind a replay (the part the owner bounds).
        self.behind = 0
        #: Cancels the task that writes it out, once one runs.
        self.scope = trio.CancelScope()

    def __bool__(self) -> bool:
        return bool(self._frames)

    def replay(self, frames: Iterable[bytes]) -> None:
        """Add a replay's *frames* at the end."""
        added = 0
        for frame in frames:
            self._frames.append((frame, False))
            added += len(frame)
        self.size += added
        self._metrics.backlog_bytes_open += added

    def queue(self, frame: bytes) -> None:
        """Add a frame that arrived for the client behind its replay."""
        self._frames.append((frame, True))
        self.size += len(frame)
        self.behind += len(frame)
        self._metrics.backlog_bytes_open += len(frame)

    def _next_piece(self) -> tuple[bytes, int]:
        """The next piece to write and how many frames it joins (the backlog is not empty)."""
        if self._piece is None:
            count = size = 0
            for frame, _ in self._frames:
                if count and size + len(frame) > REPLAY_PIECE_BYTES:
                    break
                count += 1
                size += len(frame)
            if count == 1:
                self._piece = (self._frames[0][0], 1)
            else:
                joined = b"".join(frame for frame, _ in itertools.islice(self._frames, count))
                self._piece = (joined, count)
        return self._piece

    def _written(self, count: int) -> None:
        """The next piece (*count* frames) went to the transport."""
        self._piece = None
        gone = behind = 0
        for _ in range(count):
            frame, queued = self._frames.popleft()
            gone += len(frame)
            if queued:
                behind += len(frame)
        self.size -= gone
        self.behind -= behind
        self._metrics.backlog_bytes_open -= gone

    def pump(self, transport: HubTransport) -> bool:
        """Write the pieces *transport* takes now without waiting, in order.

        Args:
            transport: the client's transport.

        Returns:
            True once nothing is left; False when its outbox is full.

        Raises:
            trio.ClosedResourceError: the connection is closed.
            trio.BrokenResourceError: the connection failed.
        """
        while self._frames:
            piece, count = self._next_piece()
            if not transport.write_nowait(piece):
                return False
            self._written(count)
        return True

    def pump_dropping_oldest(self, transport: HubTransport) -> int:
        """Write every piece now, dropping the oldest queued frames to keep the outbox bound.

        Args:
            transport: the client's transport.

        Returns:
            How many queued frames were dropped.

        Raises:
            trio.ClosedResourceError: the connection is closed.
            trio.BrokenResourceError: the connection failed.
        """
        dropped = 0
        while self._frames:
            piece, count = self._next_piece()
            dropped += transport.write_dropping_oldest(piece)
            self._written(count)
        return dropped

    def clear(self) -> None:
        """Forget every frame (the client is gone or was dropped)."""
        self._frames.clear()
        self._piece = None
        self._metrics.backlog_bytes_open -= self.size
        self.size = self.behind = 0
