"""The publisher of :class:`~trionos.RedisBroker`: a bounded queue of publications, sent in pipelines.

``publish`` never waits: an envelope goes on a queue of ``queue_size`` and one task sends
whatever is queued as one pipeline (a sequential ``PUBLISH`` costs a round trip each; a pipeline
carries hundreds). Publications are dropped, never buffered for later, when the queue is full,
when a pipeline fails, while the publisher waits for Redis to answer again, and while Redis is
known to be unreachable; each is counted in ``dropped`` and ``metrics.broker_publish_dropped``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ._metrics import Metrics
from ._redis_link import TRANSIENT, Link, new_backoff

__all__ = ["Publisher"]

logger = logging.getLogger("trionos.redis")


def _power_of_two(n: int) -> bool:
    return n & (n - 1) == 0


class Publisher:
    """One broker's publications to Redis.

    Args:
        link: the broker's connection state.
        metrics: counts dropped publications.
        queue_size: the publications queued at most.
        max_batch: the publications sent in one pipeline at most.
        reconnect_max_delay: the longest pause between two probes of an unreachable Redis.
    """

    def __init__(
        self, link: Link, metrics: Metrics, *, queue_size: int, max_batch: int, reconnect_max_delay: float
    ) -> None:
        self._link = link
        self._metrics = metrics
        self.queue_size = queue_size
        self.max_batch = max_batch
        self._reconnect_max_delay = reconnect_max_delay
        #: Envelopes published to Redis.
        self.published = 0
        #: Envelopes dropped: queue full, or Redis unreachable.
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, bytes]](queue_size)

    def offer(self, channel: bytes, envelope: bytes) -> None:
        """Queue *envelope* for *channel* without waiting; drop and count it when it cannot go."""
        link = self._link
        try:
            if not link.connected and link.client is not None:
                # Known unreachable: it would be dropped anyway, and noticing the way back is
                # left to the heartbeat and the syncer, which restore the subscriptions first.
                raise trio.WouldBlock
            self._send.send_nowait((channel, envelope))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._drop(1)
            if _power_of_two(self.dropped):
                logger.warning(
                    "publish queue full (%d) or closed: %d publications dropped so far",
                    self.queue_size,
                    self.dropped,
                )

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._metrics.broker_publish_dropped += count

    async def run(self, client: Any) -> None:
        """Send what is queued, a pipeline at a time, until cancelled."""
        receive = self._receive
        while True:
            batch = [await receive.receive()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            if not await self._send_batch(client, batch):
                await self._wait_for_redis(client)

    async def flush(self, client: Any) -> None:
        """Refuse new publications and send what is queued (on shutdown; errors propagate)."""
        self._send.close()
        batch = []
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if batch:
            await self._send_batch(client, batch)

    async def _send_batch(self, client: Any, batch: list[tuple[bytes, bytes]]) -> bool:
        try:
            with trio.fail_after(self._link.operation_timeout):
                async with client.pipeline(transaction=False) as pipe:
                    for channel, envelope in batch:
                        pipe.publish(channel, envelope)
        except TRANSIENT as exc:
            self._drop(len(batch))
            self._link.set_connected(False, exc)
            return False
        self.published += len(batch)
        self._link.set_connected(True)
        return True

    async def _wait_for_redis(self, client: Any) -> None:
        """Drop what is queued until Redis answers a PING again (delays by a capped backoff)."""
        backoff = new_backoff(self._reconnect_max_delay)
        while True:
            await trio.sleep(backoff.next_delay())
            while True:
                try:
                    self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                self._drop(1)
            try:
                with trio.fail_after(self._link.operation_timeout):
                    await client.ping()
            except TRANSIENT:
                continue
            self._link.set_connected(True)
            return
