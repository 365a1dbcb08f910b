"""Broadcast across two nodes through Redis, against the same load on one node with the memory broker.

    python bench/bench_redis.py                             # 2 nodes x 500 subscribers, private Redis
    python bench/bench_redis.py --subscribers-per-node 200 --duration 5
    python bench/bench_redis.py --redis redis://127.0.0.1:6379 --json

Two runs, each with fresh server processes and the load generator of ``bench/loadgen.py`` (picows
on uvloop, in this process):

* **memory**: one node (``Hub()``, the memory broker) with ``2 x N`` subscribers and the publisher;
* **redis**: nodes A and B (``Hub(broker=RedisBroker(url))``) on one Redis, the publisher and N
  subscribers on A, N subscribers on B. A's subscribers are served directly, B's through Redis.

The publisher keeps ``--window`` messages in flight: message k goes out once every subscriber,
on both nodes, has message k - window. The figure is deliveries/s (messages received, summed over
subscribers) over ``--duration`` seconds after ``--warmup``; the redis run also reports B's share
(the cross-node deliveries). The ratio redis / memory says what the second node and Redis cost
for the same number of subscribers.

A private ``redis-server`` (no persistence, free port) is started unless ``--redis`` is given.
Every process runs on this machine, over 127.0.0.1: with two cores, the two nodes, Redis and the
load generator share them, so compare the ratio, not the absolute figures, across machines.

The server side is this same script: ``python bench/bench_redis.py serve --port 0 [--redis URL
--prefix P]`` prints ``READY <port>`` once it listens (``/subscribe`` joins the room ``bench``,
every message on ``/publish`` is broadcast to it) and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
BENCH = SCRIPT.parent
ROOM = "bench"
READY_TIMEOUT = 30.0


# --------------------------------------------------------------------------------------------
# the server (a separate process): ``bench_redis.py serve``


def serve(args: argparse.Namespace) -> None:
    import trio

    import trionos

    async def handler(hub: trionos.Hub, request: trionos.Request) -> None:
        if not request.is_upgrade:
            await request.respond_text("bench")
            return
        ws = await request.accept()
        try:
            if request.path == "/subscribe":
                async with hub.client(ws) as client:
                    hub.join(client, ROOM)
                    async for _ in ws:
                        pass
            elif request.path == "/publish":
                async for message in ws:
                    await hub.broadcast(ROOM, message)
        except trionos.ConnectionClosed:
            pass  # a client that drops without a close frame is normal under load

    async def main() -> None:
        broker = trionos.RedisBroker(args.redis, prefix=args.prefix) if args.redis else None
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            hub = trionos.Hub(broker=broker, history=args.history)
            async with hub, trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(
                        trionos.serve,
                        args.port,
                        functools.partial(handler, hub),
                        host="127.0.0.1",
                        max_connections_per_address=None,  # the load generator is one address
                    )
                )
                print(f"READY {server.port}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


# --------------------------------------------------------------------------------------------
# the orchestrator and load generator (this process, asyncio)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def private_redis() -> AsyncIterator[tuple[str, int]]:
    """A redis-server on a free port without persistence; yields its URL and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: install it or pass --redis URL")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                ok = (await reader.readline()).startswith(b"+PONG")
                writer.close()
                if ok:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not answer PING within {READY_TIMEOUT:g} s")
            await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        await proc.wait()


@asynccontextmanager
async def bench_server(
    redis: str | None = None, prefix: str = "", *, history: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """Start ``bench_redis.py serve``; yield its ws:// URL and pid; SIGTERM it at the end."""
    command = [sys.executable, str(SCRIPT), "serve", "--port", "0"] + (["--history"] if history else [])
    if redis:
        command += ["--redis", redis, "--prefix", prefix]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if not line.startswith(b"READY "):
            raise SystemExit(f"the bench server did not start (exit {await proc.wait()}): {line!r}")
        yield f"ws://127.0.0.1:{int(line.split()[1])}", proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def measure(
    loadgen: Any, args: argparse.Namespace, publish_url: str, subscribe_urls: list[str], pids: list[int]
) -> dict[str, Any]:
    """Publisher on ``publish_url``, ``--subscribers-per-node`` per entry of ``subscribe_urls``."""
    per_url = args.subscribers_per_node * 2 // len(subscribe_urls)
    run = loadgen.FanoutRun(per_url * len(subscribe_urls), args.window, args.size)
    tallies = [[0] for _ in subscribe_urls]

    class Counted(loadgen.Subscriber):  # type: ignore[name-defined, misc]
        """loadgen's subscriber, also counting its node's deliveries."""

        def __init__(self, tally: list[int], sampled: bool) -> None:
            super().__init__(run, sampled)
            self.tally = tally

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if run.recording:
                self.tally[0] += 1  # sync messages arrive before recording starts
            super().on_ws_frame(transport, frame)

    publishers, errors = await loadgen.connect_many(
        publish_url + "/publish", [loadgen.Publisher], concurrency=1, handshake_s=30
    )
    if not publishers:
        raise SystemExit(f"the publisher could not connect: {errors}")
    run.publisher = publishers[0].transport

    def factory(tally: list[int], sampled: bool) -> Any:
        return lambda: Counted(tally, sampled)  # picows calls a factory without parameters as is

    every = max(1, run.subscribers // loadgen.LATENCY_SAMPLE)  # latency from a sample, like loadgen
    subscribers: list[Any] = []
    for url, tally in zip(subscribe_urls, tallies, strict=True):
        opened, more = await loadgen.connect_many(
            url + "/subscribe",
            [factory(tally, (len(subscribers) + i) % every == 0) for i in range(per_url)],
            concurrency=args.connect_concurrency,
            handshake_s=60,
        )
        subscribers += opened
        errors += more
    run.subscribers = len(subscribers)
    try:
        sync_s = await loadgen.sync_subscribers(run, args.sync_timeout)
        run.running = True
        for _ in range(run.window):
            run.publish()
        window = await loadgen.measure_window(
            run, args, pids, unstall=run.unstall, drained=lambda: not run.pending
        )
        elapsed, cpu = window.seconds, window.cpu
        p50, p99 = loadgen.percentiles(run.latencies, 0.50, 0.99)
        return {
            "subscribers": run.subscribers,
            "connect_errors": errors,
            "sync_s": round(sync_s, 2),
            "deliveries_per_s": round(run.delivered / elapsed),
            "per_node_deliveries_per_s": [round(t[0] / elapsed) for t in tallies],
            "p50_ms": p50,
            "p99_ms": p99,
            "lost": window.lost,
            "cpu_pct": [c["server_cpu_pct"] for c in cpu],
            "loadgen_cpu_pct": cpu[0]["loadgen_cpu_pct"],
        }
    finally:
        loadgen.disconnect_all(subscribers + publishers)
        await asyncio.sleep(0.2)


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    import loadgen

    loadgen.raise_nofile_limit()
    result: dict[str, Any] = {"subscribers_per_node": args.subscribers_per_node, "window": args.window}
    if args.only in (None, "memory"):
        async with bench_server() as (url, pid):
            result["memory"] = await measure(loadgen, args, url, [url], [pid])
    if args.only in (None, "redis"):
        async with private_redis() if not args.redis else _given(args.redis) as (redis, redis_pid):
            prefix = f"bench-{os.getpid()}"
            async with bench_server(redis, prefix) as (a, a_pid), bench_server(redis, prefix) as (b, b_pid):
                pids = [a_pid, b_pid] + ([redis_pid] if redis_pid else [])
                result["redis"] = await measure(loadgen, args, a, [a, b], pids)
    if args.only is None:
        result["ratio"] = round(result["redis"]["deliveries_per_s"] / result["memory"]["deliveries_per_s"], 2)
    return result


@asynccontextmanager
async def _given(url: str) -> AsyncIterator[tuple[str, int]]:
    yield url, 0


def report(result: dict[str, Any]) -> None:
    n = result["subscribers_per_node"]
    print(f"broadcast, window {result['window']}: publisher on node A")
    if memory := result.get("memory"):
        print(
            f"  memory, 1 node x {2 * n} subscribers: {memory['deliveries_per_s']:>9,} deliveries/s"
            f"  p50 {memory['p50_ms']} ms  p99 {memory['p99_ms']} ms  server CPU {memory['cpu_pct'][0]} %"
            f"  lost {memory['lost']}"
        )
    if redis := result.get("redis"):
        cpu = " / ".join(f"{c} %" for c in redis["cpu_pct"])
        print(
            f"  redis,  2 nodes x {n} subscribers: {redis['deliveries_per_s']:>9,} deliveries/s"
            f"  (cross-node, on B: {redis['per_node_deliveries_per_s'][1]:,}/s)"
            f"  p50 {redis['p50_ms']} ms  p99 {redis['p99_ms']} ms  CPU A / B / Redis {cpu}"
            f"  lost {redis['lost']}"
        )
    if "ratio" in result:
        print(f"  redis / memory: {result['ratio']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="run one bench node (used by the orchestrator)")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--redis", default=None, help="share the room through this Redis")
    server.add_argument("--prefix", default="trionos-bench", help="Redis key and channel prefix")
    server.add_argument("--history", action="store_true", help="keep a history in the room")
    parser.add_argument("--redis", default=None, help="use this Redis instead of a private redis-server")
    parser.add_argument("--subscribers-per-node", type=int, default=500)
    parser.add_argument("--window", type=int, default=10, help="messages in flight")
    parser.add_argument("--size", type=int, default=64, help="approximate message size in bytes")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--sync-timeout", type=float, default=60.0)
    parser.add_argument("--only", choices=("memory", "redis"), help="run one of the two setups")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.command == "serve":
        serve(args)
        return
    for url in filter(None, [args.redis]):
        host = url.split("//", 1)[-1].split("@")[-1].split(":")[0].split("/")[0]
        if not (host.startswith("127.") or host == "localhost"):
            raise SystemExit(f"bench_redis only uses loopback addresses, got {host!r}")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(orchestrate(args))
    else:
        result = uvloop.run(orchestrate(args))
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        report(result)


if __name__ == "__main__":
    main()
