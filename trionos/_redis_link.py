"""What the Redis broker's parts share: coredis, the errors that mean "Redis is away", the link state.

The only module of trionos that imports coredis (and anyio, which coredis runs on and depends
on) at module level, inside one guarded import: without the ``redis`` extra, using
:class:`~trionos.RedisBroker` raises an :class:`ImportError` that says what to install.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

try:
    import anyio
    import coredis
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import RedisError
    from coredis.retry import CompositeRetryPolicy, ExponentialBackoffRetryPolicy
except ImportError as exc:  # tested by making coredis unimportable (tests/test_redis.py)
    raise ImportError(
        f"trionos.RedisBroker needs coredis: pip install 'trionos[redis]' ({exc.name or exc} is missing)"
    ) from exc

from ._backoff import Backoff
from ._metrics import Metrics

__all__ = [
    "FIRST_DELAY",
    "RETRYABLE_AT_START",
    "TRANSIENT",
    "CompositeRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "Link",
    "RedisConnectionError",
    "RedisError",
    "coredis",
    "new_backoff",
    "redact",
]

logger = logging.getLogger("trionos.redis")

#: What a Redis operation raises when Redis is away, slow or restarting: retried or given up on.
#: (coredis lets anyio's stream errors through when a connection breaks under a request.)
TRANSIENT: tuple[type[Exception], ...] = (
    RedisError,
    TimeoutError,
    trio.TooSlowError,
    OSError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)

#: Start-up errors worth retrying until ``connect_timeout``: Redis is not there (yet).
RETRYABLE_AT_START: tuple[type[Exception], ...] = (
    RedisConnectionError,
    TimeoutError,
    trio.TooSlowError,
    OSError,
)

#: The first delay of every retry schedule, in seconds (the cap is ``reconnect_max_delay``).
FIRST_DELAY = 0.05


def new_backoff(max_delay: float) -> Backoff:
    """The retry schedule of the broker's loops: from :data:`FIRST_DELAY` doubling to ``max_delay``.

    Full jitter (see :class:`~trionos.Backoff`), so that the nodes of a cluster whose Redis
    restarted do not all come back in the same instant.
    """
    return Backoff(initial=min(FIRST_DELAY, max_delay), maximum=max_delay)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


@attrs.define(eq=False)
class Link:
    """The broker's connection to Redis as its parts see it: the client and whether Redis answers.

    ``client`` is the coredis client while the broker's session runs (None before and after);
    ``connected`` says whether the last Redis operation succeeded.
    """

    url: str
    operation_timeout: float
    metrics: Metrics
    client: Any = None
    connected: bool = False

    def set_connected(self, ok: bool, error: BaseException | None = None) -> None:
        """Record the outcome of a Redis operation; log (and count) the changes of state."""
        if ok and not self.connected:
            self.metrics.broker_reconnects += 1
            logger.info("Redis at %s is reachable again", redact(self.url))
        elif not ok and self.connected:
            logger.warning(
                "Redis at %s is unreachable (%s): local delivery goes on, publications are dropped",
                redact(self.url),
                error or "unknown error",
            )
        self.connected = ok
