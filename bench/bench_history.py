"""What a room's history costs, and how fast 1,000 clients recover after a restart.

    python bench/bench_history.py                      # both parts
    python bench/bench_history.py --only broadcast --subscribers 1000 --duration 3
    python bench/bench_history.py --only recovery --clients 1000 --missed 50

* **broadcast**: the load of ``bench/bench_redis.py`` (a picows publisher keeping ``--window``
  messages in flight, ``--subscribers`` picows subscribers in one room, deliveries/s) against one
  server process with the memory broker, history off, then on (``Hub(history=True)``: every
  message is appended to the room's bounded history and gets a position), then on two nodes
  sharing a private Redis with history on (every broadcast is one Lua script in Redis that
  assigns the offset, appends to the stream and publishes). The issue's target is history on /
  off >= 0.8 on the memory broker.
* **recovery**: ``--clients`` trionos clients (this process) in one room of a node (a process of
  its own, ``bench_history.py node``) with its history in Redis (the chat protocol's join and
  chat, without presence announcements) receive ``--messages`` messages, sent in windows of 10;
  the node is stopped (SIGTERM: every client's connection closes) and started again on the same
  port and Redis; all clients reconnect at once, each with the position it had ``--missed``
  messages before the end (its bookkeeping was behind). Reported: the time from the restart
  until the new node listens, until every client has its welcome (``recovered``) and its missed
  messages, and the difference; and how many recoveries were complete.

Everything runs on 127.0.0.1. On a shared two-core machine compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_redis  # noqa: E402


async def broadcast_part(args: argparse.Namespace) -> dict[str, Any]:
    import loadgen

    loadgen.raise_nofile_limit()
    options = argparse.Namespace(
        subscribers_per_node=args.subscribers // 2,
        window=args.window,
        size=args.size,
        duration=args.duration,
        warmup=args.warmup,
        connect_concurrency=64,
        sync_timeout=60.0,
    )
    result: dict[str, Any] = {"subscribers": args.subscribers}
    for name, history in (("memory_history_off", False), ("memory_history_on", True)):
        async with bench_redis.bench_server(history=history) as (url, pid):
            result[name] = await bench_redis.measure(loadgen, options, url, [url], [pid])
    result["history_on_off_ratio"] = round(
        result["memory_history_on"]["deliveries_per_s"] / result["memory_history_off"]["deliveries_per_s"], 2
    )
    async with bench_redis.private_redis() as (redis, redis_pid):
        prefix = f"bench-history-{os.getpid()}"
        async with (
            bench_redis.bench_server(redis, prefix, history=True) as (a, a_pid),
            bench_redis.bench_server(redis, prefix, history=True) as (b, b_pid),
        ):
            result["redis_history_on"] = await bench_redis.measure(
                loadgen, options, a, [a, b], [a_pid, b_pid, redis_pid]
            )
    return result


#: The recovery run's sender waits for every client after this many messages.
WINDOW = 10


def recovery_node(args: argparse.Namespace) -> None:
    """``bench_history.py node``: one node of the recovery run, in a process of its own.

    The chat protocol's join (with since) and chat, without presence: the measurement is the
    recovery, not the n-squared ``joined`` announcements of 1,000 clients joining one room. Prints
    ``READY`` once it listens and stops on SIGTERM (its connections close, as in a restart).
    """
    import signal

    import trio

    import trionos
    from trionos.chat import CLIENT_CODEC, SERVER_CODEC, Chat, Join, Message, Welcome

    async def handler(hub: trionos.Hub, req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            async for raw in ws:
                message = CLIENT_CODEC.decode(raw)
                if isinstance(message, Join):
                    since = message.since

                    def welcome(r: trionos.Recovery, since: Any = since) -> Welcome:
                        recovered = None if since is None else r.complete
                        return Welcome((), r.position.epoch, r.position.offset, recovered)

                    client.identity = message.username
                    await hub.join_with_history(client, message.room, since=since, welcome=welcome)
                elif isinstance(message, Chat):
                    await hub.broadcast("bench", Message("sender", message.text), exclude=client)

    async def main() -> None:
        broker = trionos.RedisBroker(args.redis, prefix=args.prefix)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trionos.Hub(broker=broker, codec=SERVER_CODEC, history=True) as hub:
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        functools.partial(
                            trionos.serve,
                            args.port,
                            functools.partial(handler, hub),
                            host="127.0.0.1",
                            max_connections_per_address=None,  # every client is on 127.0.0.1
                        )
                    )
                    print("READY", flush=True)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
            metrics = hub.metrics
            print(
                f"node: {metrics.recoveries_complete} complete and {metrics.recoveries_partial} partial "
                f"recoveries, {metrics.remote_frames_dropped} frames dropped",
                file=sys.stderr,
                flush=True,
            )

    trio.run(main)


def recovery_part(args: argparse.Namespace, redis: str) -> dict[str, Any]:
    import trio

    import trionos
    from trionos.chat import CLIENT_CODEC, SERVER_CODEC, Join, Message, Welcome

    prefix = f"bench-recovery-{os.getpid()}"
    port = bench_redis.free_port()
    url = f"ws://127.0.0.1:{port}/"
    mark = args.messages - args.missed  # each client's bookkeeping stopped at this offset
    command = [sys.executable, str(Path(__file__).resolve()), "node", "--redis", redis, "--prefix", prefix]
    command += ["--port", str(port)]

    async def start_node() -> trio.Process:
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        assert process.stdout is not None
        with trio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise SystemExit("the recovery node exited before it listened")
                line += chunk
        if line.strip() != b"READY":
            raise SystemExit(f"the recovery node said {line!r}")
        return process

    async def main() -> dict[str, Any]:
        welcomed, all_back = trio.Event(), trio.Event()
        positions: dict[int, trionos.Position] = {}
        results: list[tuple[bool | None, int]] = []
        counts = {"welcome": 0}
        reached: dict[int, int] = {}
        windows = {offset: trio.Event() for offset in range(1, args.messages + 1)}
        # Set once the restarted node listens: the clients wait for it rather than retry in a
        # loop (a real client would back off; the figure is the node's, not the backoff's).
        back_up = trio.Event()

        async def client(n: int) -> None:
            try:
                async with trionos.connect(url, message_queue_size=1024) as ws:
                    await ws.send_message(Join(f"c{n}", "bench"), CLIENT_CODEC)
                    epoch = ""
                    async for raw in ws:
                        message = SERVER_CODEC.decode(raw)
                        if isinstance(message, Welcome):
                            epoch = message.epoch or ""
                            counts["welcome"] += 1
                            if counts["welcome"] == args.clients:
                                welcomed.set()
                        elif isinstance(message, Message) and message.offset is not None:
                            if message.offset == mark:
                                positions[n] = trionos.Position(epoch, mark)
                            if message.offset % WINDOW == 0 or message.offset == args.messages:
                                # The sender waits for every client at the end of each window,
                                # and the node stops only once every message is in the history.
                                reached[message.offset] = reached.get(message.offset, 0) + 1
                                if reached[message.offset] == args.clients:
                                    windows[message.offset].set()
            except trionos.ConnectionClosed:
                pass  # however the stopping node closed it
            await rejoin(n)  # come back at the recorded position

        async def rejoin(n: int) -> None:
            await back_up.wait()
            while True:
                try:
                    async with trionos.connect(url, message_queue_size=1024) as ws:
                        await ws.send_message(Join(f"c{n}", "bench", since=positions[n]), CLIENT_CODEC)
                        recovered: bool | None = None
                        replayed = 0
                        async for raw in ws:
                            message = SERVER_CODEC.decode(raw)
                            if isinstance(message, Welcome):
                                recovered = message.recovered
                            elif isinstance(message, Message):
                                replayed += 1
                                if replayed == args.missed:
                                    break
                        results.append((recovered, replayed))
                        if len(results) == args.clients:
                            all_back.set()
                        return
                except (OSError, trionos.HandshakeError):
                    await trio.sleep(0.01)  # refused under the burst (listen backlog): again

        async with trio.open_nursery() as nursery:
            node = await start_node()
            for n in range(args.clients):
                nursery.start_soon(client, n)
            await welcomed.wait()
            print(f"{args.clients} clients joined", file=sys.stderr, flush=True)
            async with trionos.connect(url) as sender:
                await sender.send_message(Join("sender", "bench"), CLIENT_CODEC)
                # Paced by windows (as a chat is): a burst longer than the room's channel
                # (room_queue_size) would be dropped by the nodes' readers, history or not.
                for i in range(1, args.messages + 1):
                    await sender.send_json({"type": "chat", "text": f"m{i}"})
                    if i % WINDOW == 0 or i == args.messages:
                        await windows[i].wait()
            print(f"{args.messages} messages received; restarting the node", file=sys.stderr, flush=True)
            node.terminate()
            await node.wait()
            restarted = time.perf_counter()
            node = await start_node()
            listening = time.perf_counter() - restarted
            back_up.set()
            print(f"a new node listens after {listening:.2f} s", file=sys.stderr, flush=True)

            async def progress() -> None:
                while True:
                    await trio.sleep(5)
                    print(f"{len(results)} clients recovered so far", file=sys.stderr, flush=True)

            nursery.start_soon(progress)
            await all_back.wait()
            elapsed = time.perf_counter() - restarted
            nursery.cancel_scope.cancel()
        node.terminate()
        await node.wait()
        return {
            "clients": args.clients,
            "missed_each": args.missed,
            "seconds_until_listening": round(listening, 3),
            "seconds_until_all_recovered": round(elapsed, 3),
            "seconds_from_listening_to_all_recovered": round(elapsed - listening, 3),
            "complete": sum(1 for recovered, _ in results if recovered),
            "messages_replayed": sum(replayed for _, replayed in results),
        }

    return trio.run(main)


async def with_redis(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_redis.private_redis() as (redis, _):
        return await asyncio.to_thread(recovery_part, args, redis)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("broadcast", "recovery"))
    parser.add_argument("role", nargs="?", choices=("node",), help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--missed", type=int, default=50)
    args = parser.parse_args()
    if args.role == "node":
        recovery_node(args)
        return
    result: dict[str, Any] = {}
    if args.only in (None, "broadcast"):
        result["broadcast"] = asyncio.run(broadcast_part(args))
    if args.only in (None, "recovery"):
        result["recovery"] = asyncio.run(with_redis(args))
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
