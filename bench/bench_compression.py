"""trionos against websockets asyncio with permessage-deflate on: echo, broadcast, idle memory.

Run ``python bench/bench_compression.py [--seconds S] [--clients N] [--idle N]``. The picows load
generator of ``make bench`` cannot negotiate permessage-deflate, so this one is a websockets
asyncio client (uvloop) offering websockets' default compression. The servers run as their own
processes (``bench/servers/*.py --compression``): trionos with ``compression="deflate"`` (no
context takeover, compress-once broadcasts), trionos with ``compression_context_takeover=True``
too (``trionos-takeover``), and websockets with its default settings (context takeover, 4 KiB
windows); they run in turn, A B C A B C, and the figures are medians. Messages are a 1 KiB JSON
document, so compression has something to do. The client is pure Python and decompresses every
message: it is the limit in the echo and broadcast figures, so read the server CPU per message
next to them. Idle memory is the server's RSS growth per connection, for connections that never
sent a message and (``after one message``) for connections that exchanged one each: a
compressor with context takeover is kept from the first message on. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

BENCH = Path(__file__).resolve().parent
SERVERS = {
    "trionos": ("trionos_server.py", ["--heartbeat"]),
    "trionos-takeover": ("trionos_server.py", ["--heartbeat", "--context-takeover"]),
    "websockets-asyncio": ("websockets_asyncio.py", []),
}
MESSAGE = json.dumps({"type": "state", "users": [{"name": f"user{i}", "online": True} for i in range(30)]})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def echo(url: str, clients: int, seconds: float) -> int:
    count = 0
    stop = time.monotonic() + seconds

    async def one() -> None:
        nonlocal count
        async with connect(url, compression="deflate", max_size=None) as ws:
            while time.monotonic() < stop:
                await ws.send(MESSAGE)
                await ws.recv()
                count += 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return count


async def broadcast(base: str, subscribers: int, seconds: float) -> int:
    received = 0
    ready = asyncio.Event()
    done = asyncio.Event()
    opened = 0

    async def subscriber() -> None:
        nonlocal received, opened
        async with connect(f"{base}/subscribe", compression="deflate", max_size=None) as ws:
            opened += 1
            if opened == subscribers:
                ready.set()
            while not done.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                received += 1

    tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
    await ready.wait()
    await asyncio.sleep(0.3)  # the server registers subscribers after their handshake
    start = received
    async with connect(f"{base}/publish", compression="deflate") as publisher:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            await publisher.send(MESSAGE)
            await asyncio.sleep(0.005)  # ~200 broadcasts/s: what the client side can take
    delivered = received - start
    done.set()
    await asyncio.gather(*tasks)
    return delivered


async def idle(base: str, connections: int, pid: int) -> tuple[float, float]:
    """Server RSS growth per connection: idle from the start, then after one message each."""
    before = rss_kib(pid)
    sockets = [await connect(f"{base}/echo", compression="deflate").__aenter__() for _ in range(connections)]
    await asyncio.sleep(1.0)
    idle_kib = (rss_kib(pid) - before) / connections
    for ws in sockets:
        await ws.send(MESSAGE)
        await ws.recv()
    await asyncio.sleep(1.0)
    talked_kib = (rss_kib(pid) - before) / connections
    for ws in sockets:
        await ws.close()
    return idle_kib, talked_kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {name: {} for name in SERVERS}
    for _ in range(args.rounds):
        for name, (script, flags) in SERVERS.items():
            server = subprocess.Popen(
                [sys.executable, str(BENCH / "servers" / script), "--port", "0", "--compression", *flags],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None
                port = int(server.stdout.readline().split()[1])
                base = f"ws://127.0.0.1:{port}"
                cpu = cpu_seconds(server.pid)
                messages = asyncio.run(echo(f"{base}/echo", args.clients, args.seconds))
                echo_cpu = (cpu_seconds(server.pid) - cpu) / messages * 1e6
                deliveries = asyncio.run(broadcast(base, args.subscribers, args.seconds))
                kib, talked_kib = asyncio.run(idle(base, args.idle, server.pid))
            finally:
                server.terminate()
                server.wait()
            row = results[name]
            row.setdefault("echo msgs/s", []).append(messages / args.seconds)
            row.setdefault("echo server us/msg", []).append(echo_cpu)
            row.setdefault("broadcast deliveries/s", []).append(deliveries / args.seconds)
            row.setdefault("idle KiB/conn (RSS)", []).append(kib)
            row.setdefault("after one message, KiB/conn", []).append(talked_kib)
    print(f"permessage-deflate on, 1 KiB JSON messages; medians of {args.rounds} rounds")
    for name in ("trionos", "trionos-takeover"):
        print(f"{name} vs websockets asyncio (its default compression):")
        for metric in results[name]:
            t = statistics.median(results[name][metric])
            w = statistics.median(results["websockets-asyncio"][metric])
            print(f"  {metric:>28}: {name} {t:10.1f}   websockets asyncio {w:10.1f}   ratio {t / w:.2f}")


if __name__ == "__main__":
    main()
