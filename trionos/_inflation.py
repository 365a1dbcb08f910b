"""How much a peer may make us inflate: a per-connection budget of bytes over time.

permessage-deflate lets ~1 KiB on the wire become ~1 MiB in memory. The message size bound
(``max_message_size``) caps one message, and the read-ahead bound caps what waits for the
application, but neither caps the *rate*: a peer sending small bombs that the application reads
and drops keeps a core busy inflating. An :class:`InflationBudget` is a token bucket of bytes:
it holds at most ``burst`` bytes and gains ``rate`` bytes per second; every read is charged what
inflation *added* (the messages' bytes minus the wire bytes they came in, so uncompressed
traffic costs nothing). While the bucket is in debt the connection does not read: TCP pushes
back on the peer, and the other connections get the core.

Pure: no I/O, no clock of its own (every call takes ``now``), never imports trio.
"""

from __future__ import annotations

__all__ = ["DEFAULT_INFLATE_RATE", "InflationBudget"]

#: Bytes per second inflation may add on one connection (32 MiB/s), and the burst is twice that.
DEFAULT_INFLATE_RATE = 32 * 1024 * 1024


class InflationBudget:
    """One connection's budget: ``rate`` bytes per second, at most ``2 * rate`` at once.

    Args:
        rate: bytes per second inflation may add.
        now: the time the connection opened, on any monotonic clock (it starts full).
    """

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = float(rate)
        self._burst = 2.0 * rate
        self._tokens = self._burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    def spend(self, added: int, now: float) -> None:
        """Charge the bytes inflation added to one read.

        Args:
            added: the messages' bytes minus the wire bytes they came in (nothing when negative).
            now: the time.
        """
        self._refill(now)
        if added > 0:
            self._tokens -= added

    def delay(self, now: float) -> float:
        """Seconds to wait before reading again: 0 unless the budget is in debt.

        Args:
            now: the time.

        Returns:
            How long until the debt is paid back.
        """
        self._refill(now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def exhausted(self) -> bool:
        """Whether the budget is in debt (as of the last :meth:`spend` or :meth:`delay`)."""
        return self._tokens < 0
