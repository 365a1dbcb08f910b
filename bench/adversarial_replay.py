"""Issue #25, finding 3 (last part): rejoins from clients that never read their multi-MiB replay.

    python bench/adversarial_replay.py [--broker memory|redis] [--history-mib 8] [--joins 5]

In this process, over 127.0.0.1: a server with a hub whose room keeps ``--history-mib`` MiB of
history (64 KiB messages; in memory, or in a private redis-server with ``--broker redis``), one
member that reads everything, and ``--joins`` clients that each rejoin from offset 0 of an
unknown epoch (so the whole history is replayed to them) and then never read. Meanwhile the
room gets one short live broadcast every 50 ms. Reported:

* the most bytes any slow client's outbox ever held (the server's ``max_outbox_bytes`` is 1 MiB),
  and the most the hub kept besides in backlogs (``Metrics.backlog_bytes_open``, sampled);
* the slowest live broadcast's delay to the reading member (the room held back, or not);
* how the slow clients ended (close codes) and how long that took;
* the process's resident memory growth.

Works on any trionos version (a missing counter prints as ``n/a``), to compare before and after.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from adversarial_history import rss_mb
from adversarial_redis import private_redis

import trionos

LIVE_EVERY = 0.05


@asynccontextmanager
async def redis_url(broker: str) -> AsyncIterator[str | None]:
    """A private redis-server's URL with ``--broker redis`` (None for the memory broker)."""
    if broker != "redis":
        yield None
        return
    async with private_redis() as url:
        yield url


async def main(args: argparse.Namespace) -> None:
    """Fill the history, run the slow rejoins beside a reading member and live traffic, report."""
    async with redis_url(args.broker) as url:
        broker = None if url is None else trionos.RedisBroker(url, prefix="replay")
        bounds = trionos.HistoryBounds(max_messages=10_000, max_bytes=args.history_mib << 20)
        async with trionos.Hub(history=bounds, broker=broker) as hub:
            await measure(hub, args)


async def measure(hub: trionos.Hub, args: argparse.Namespace) -> None:
    """The figures, for one hub."""
    chunk = 64 << 10
    for n in range((args.history_mib << 20) // chunk):
        await hub.broadcast("r", json.dumps({"n": n, "pad": "x" * (chunk - 40)}))
    base = rss_mb()
    slow: list[trionos.Client] = []
    closes: list[tuple[int | None, float]] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            if req.path == "/slow":
                slow.append(client)
                await hub.join_with_history(client, "r", since=trionos.Position("gone", 0))
            else:
                hub.join(client, "r")
            try:
                async for _ in ws:
                    pass
            except trionos.ConnectionClosed:
                pass
            if req.path == "/slow":
                closes.append((ws.close_code, time.perf_counter()))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(trionos.serve, 0, handler, host="127.0.0.1"))
        url = f"ws://127.0.0.1:{server.port}"
        peak_backlog = 0
        delays: list[float] = []
        async with trionos.connect(url + "/member", max_message_size=4 << 20) as member:
            async with trio.open_nursery() as clients:
                started = time.perf_counter()
                for _ in range(args.joins):
                    clients.start_soon(never_read, url + "/slow", args.seconds)
                sent: dict[int, float] = {}

                async def read_live() -> None:
                    async for raw in member:
                        message = json.loads(raw)
                        if "live" in message:
                            delays.append(time.perf_counter() - sent[message["live"]])

                clients.start_soon(read_live)
                for n in range(int(args.seconds / LIVE_EVERY)):
                    sent[n] = time.perf_counter()
                    await hub.broadcast("r", json.dumps({"live": n}))
                    peak_backlog = max(peak_backlog, getattr(hub.metrics, "backlog_bytes_open", 0))
                    await trio.sleep(LIVE_EVERY)
                await trio.sleep(0.5)  # the last live messages' way to the member
                clients.cancel_scope.cancel()
        peak_outbox = max(c.ws.transport.peak_outbox_bytes for c in slow)
        has_backlog = hasattr(hub.metrics, "backlog_bytes_open")
        codes: dict[Any, int] = {}
        for code, _ in closes:
            codes[code] = codes.get(code, 0) + 1
        ended = max((when - started for _, when in closes), default=float("nan"))
        print(
            f"{args.broker}: {args.joins} rejoins from offset 0, {args.history_mib} MiB of history each, "
            f"never read"
        )
        print(f"  slow clients' outbox high-water mark: {peak_outbox / 2**20:.2f} MiB (bound 1 MiB)")
        print(
            "  hub backlog high-water mark (sampled): "
            + (f"{peak_backlog / 2**20:.2f} MiB" if has_backlog else "n/a (no such counter)")
        )
        print(
            f"  live broadcasts to the reading member: {len(delays)} received, "
            f"slowest {max(delays, default=float('nan')) * 1000:.0f} ms"
        )
        print(f"  slow clients closed: {codes or 'none'}, the last after {ended:.2f} s")
        print(f"  resident memory +{rss_mb() - base:.0f} MB")
        nursery.cancel_scope.cancel()


async def never_read(url: str, seconds: float) -> None:
    """Join as a slow client and read nothing (its queue of 1 message fills, then TCP pushes back)."""
    try:
        async with trionos.connect(url, max_message_size=4 << 20, heartbeat=None):
            await trio.sleep(seconds + 10)
    except trionos.ConnectionClosed:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=("memory", "redis"), default="memory")
    parser.add_argument("--history-mib", type=int, default=8)
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    trio.run(main, parser.parse_args())
