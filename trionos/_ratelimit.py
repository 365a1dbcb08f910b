"""Per-connection message rate limits: a token bucket, and when to give up on a client.

Pure: no I/O, no clock of its own (every call takes ``now``), never imports trio. The hub keeps
one :class:`TokenBucket` per client that sends (see :meth:`trionos.Hub.admit`).

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second. Each message takes
one; a message that finds the bucket empty is *refused* (the application answers it with an
error instead of acting on it). A client that keeps sending while refused is abusing the limit:
once ``close_after`` messages in a row have been refused, the verdict is :data:`CLOSE` (the hub
closes it with 1008). A client that slows down when told so is never closed.
"""

from __future__ import annotations

import enum
import math

import attrs

__all__ = ["RateLimit", "TokenBucket", "RateVerdict"]

#: Tokens short of one that still count as one: time differences on a float clock lose precision,
#: and a client keeping exactly to the rate must not be refused for a rounding error.
_SLACK = 1e-6


class RateVerdict(enum.Enum):
    """What to do with one inbound message."""

    #: Within the limit: handle it.
    ACCEPT = "accept"
    #: Over the limit: do not act on it (answer with an error).
    REFUSE = "refuse"
    #: Over the limit, and ``close_after`` messages in a row were refused: close the connection.
    CLOSE = "close"


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """attrs validator: a positive finite number."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """attrs validator: an integer (not a bool) of at least 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


@attrs.frozen
class RateLimit:
    """A per-connection message rate limit, for :class:`Hub(rate_limit=...) <trionos.Hub>`.

    The defaults suit a chat: 10 messages per second, bursts of 20, and a client that sends 50
    more while refused is closed.

    Args:
        rate: messages per second on average (positive, finite).
        burst: messages at once after a quiet spell (at least 1).
        close_after: refused messages in a row (the client kept sending while over the limit)
            that close the connection with 1008 (at least 1).

    Raises:
        ValueError: a value is out of range.
    """

    rate: float = attrs.field(default=10.0, validator=_positive)
    burst: int = attrs.field(default=20, validator=_at_least_one)
    close_after: int = attrs.field(default=50, validator=_at_least_one)

    def bucket(self, now: float) -> TokenBucket:
        """A full bucket for a new connection.

        Args:
            now: the time, in seconds on any monotonic clock.

        Returns:
            A :class:`TokenBucket` holding ``burst`` tokens.
        """
        return TokenBucket(self, float(self.burst), now)


@attrs.define
class TokenBucket:
    """The state of one connection's limit: tokens left, when they were counted, refusals in a row."""

    limit: RateLimit
    tokens: float
    updated: float
    refused_in_a_row: int = 0

    def take(self, now: float) -> RateVerdict:
        """Account for one message arriving at *now*.

        Args:
            now: the time, on the bucket's monotonic clock; if it goes backwards, no tokens are
                added.

        Returns:
            What to do with the message.
        """
        limit = self.limit
        if now > self.updated:
            self.tokens = min(float(limit.burst), self.tokens + (now - self.updated) * limit.rate)
            self.updated = now
        if self.tokens >= 1.0 - _SLACK:
            self.tokens = max(0.0, self.tokens - 1.0)
            self.refused_in_a_row = 0
            return RateVerdict.ACCEPT
        self.refused_in_a_row += 1
        return RateVerdict.CLOSE if self.refused_in_a_row >= limit.close_after else RateVerdict.REFUSE

    def retry_after(self, now: float) -> float:
        """How long until the next message would be accepted.

        Args:
            now: the time, on the bucket's clock.

        Returns:
            Seconds from *now* (0 if it would be accepted now).
        """
        tokens = self.tokens
        if now > self.updated:
            tokens = min(float(self.limit.burst), tokens + (now - self.updated) * self.limit.rate)
        return max(0.0, (1.0 - tokens) / self.limit.rate)
