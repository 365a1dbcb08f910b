"""Issue #25, findings 3 and 8: what a room's history and joins leave in Redis.

    python bench/adversarial_redis.py [--messages 100] [--size 1000000] [--joins 200]

Starts a private redis-server on 127.0.0.1 (a free port, no persistence), and in this process a
hub with the default history bounds on a RedisBroker:

* **bytes**: ``--messages`` broadcasts of ``--size`` bytes into one room. Reported: Redis's
  ``used_memory`` growth, and the bytes a join from offset 0 of the room's epoch replays.
* **joins**: ``--joins`` joins of rooms that never get a message (a join with history reads the
  room's position). Reported: the keys they left, and how many of them never expire.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio

import trionos
from trionos._redis import RedisBroker


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A redis-server of its own on 127.0.0.1 (a free port, no persistence), once it answers: its URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed"
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with tempfile.TemporaryDirectory() as workdir:
        async with trio.open_nursery() as nursery:
            run = functools.partial(trio.run_process, [*command, "--dir", workdir], check=False)
            await nursery.start(functools.partial(run, stdout=subprocess.DEVNULL))
            url = f"redis://127.0.0.1:{port}"
            async with coredis.Redis.from_url(url) as probe:
                with trio.fail_after(10):
                    while True:
                        try:
                            await probe.ping()
                            break
                        except (OSError, coredis.exceptions.ConnectionError):
                            await trio.sleep(0.05)  # polling the new server until it answers
            yield url
            nursery.cancel_scope.cancel()  # stops redis-server


async def main(args: argparse.Namespace) -> None:
    """Run both parts against a private redis-server and print their figures."""
    async with private_redis() as url, coredis.Redis.from_url(url) as probe:
        await measure(url, probe, args)


async def used_memory(probe: Any) -> int:
    """Redis's ``used_memory``, in bytes."""
    return int((await probe.info("memory"))["used_memory"])


async def measure(url: str, probe: Any, args: argparse.Namespace) -> None:
    """The two parts."""
    broker = RedisBroker(url, prefix="adv")
    async with trionos.Hub(broker=broker, history=True) as hub:
        base = await used_memory(probe)
        payload = "x" * args.size
        started = time.perf_counter()
        for _ in range(args.messages):
            await hub.broadcast("big", payload)
        grown = await used_memory(probe) - base
        print(
            f"bytes: {args.messages} x {args.size:,} B broadcasts in {time.perf_counter() - started:.1f} s: "
            f"Redis used_memory +{grown / 1e6:.1f} MB"
        )
        meta = await probe.hgetall("adv:history:big:meta")
        epoch = meta[b"epoch"].decode()
        entries = await probe.xrange("adv:history:big")
        replay = sum(len(entry.field_values[b"p"]) for entry in entries)
        print(
            f"bytes: a join from offset 0 of epoch {epoch} replays {len(entries)} messages, "
            f"{replay / 1e6:.1f} MB"
        )
        for n in range(args.joins):
            # What a join's read does: the room's position in Redis (started when it has none).
            await broker.history_recover(
                f"quiet-{n}", None, None, bounds=trionos.HistoryBounds(), epoch=f"e{n}"
            )
        keys = [key async for key in probe.scan_iter(match="adv:history:quiet-*")]
        forever = [key for key in keys if await probe.pttl(key) == -1]
        print(
            f"joins: {args.joins} joins of rooms without messages: {len(keys)} keys, "
            f"{len(forever)} never expire"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--joins", type=int, default=200)
    trio.run(main, parser.parse_args())
