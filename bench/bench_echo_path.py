"""What the connection layer costs per echoed message, above raw Trio socket I/O.

Run ``python bench/bench_echo_path.py [--connections N] [--tcp] [--messages M] [--rounds R]
[--heartbeat]``. One Trio process, ``N`` socket pairs (default 1; Unix socket pairs, or TCP
connections over 127.0.0.1 with ``--tcp``, as in a server, whose kernel work also cools the
CPU caches the Python code runs in): on each, a client task writes a masked 64-byte
text frame, waits for the reply, and repeats; the server side is either a ``trionos`` WebSocket
(``async for`` and ``send``, as the echo bench server does) or the same loop on raw
``os.read``/``os.write`` with Trio's checkpoints (the floor). The figure is process CPU time per
round trip (client and server), best of ``--rounds`` alternating runs; the difference is the
layer: websockets' parser, our framing and bookkeeping, the coroutines in between.

Three more figures, each from a separate run so that timing them does not slow the others:

- *the parse*: CPU time inside ``MessageCore.feed`` per frame (the fast path, or websockets'
  ``Protocol.receive_data`` behind it), timed in place (the parser runs interleaved with the
  other connections and Trio, as in a server);
- *the cyclic GC*: collections and their time per round trip in the trionos run (with many
  connections, every live waiting coroutine is young and is traversed by each collection);
- the same parse of the same frame in a tight loop, through the fast path and through
  websockets' core alone (``--no-fast-path`` runs the whole bench without the fast path).

No load generator, no second process, so it moves much less than ``make bench`` when the
machine is shared. ``--heartbeat`` puts each connection under an idle deadline (60 s), as
``serve`` does by default; ``--gc-threshold T`` runs everything with the cyclic GC's first
threshold at ``T`` (``gc.set_threshold``; Python's default is 700).
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from websockets.protocol import OPEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trionos._connection import ProtocolLog, ServerCore, WebSocket
from trionos._frames import OP_TEXT, encode_frame
from trionos._transport import Transport

FRAME = encode_frame(OP_TEXT, b"x" * 64, masked=True)
REPLY = encode_frame(OP_TEXT, b"x" * 64)  # what the server sends back: the same text, unmasked
WARMUP_ROUND_TRIPS = 2_000
#: Whether the trionos connections use the fast path (``--no-fast-path`` turns it off).
FAST_PATH = [True]


async def _client(sock: trio.socket.SocketType, count: int) -> None:
    fd = sock.fileno()
    for _ in range(count):
        os.write(fd, FRAME)
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                if os.read(fd, 4096):
                    break
            except BlockingIOError:
                pass


async def _trionos_server(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def _raw_server(sock: trio.socket.SocketType) -> None:
    fd = sock.fileno()
    while True:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            os.read(fd, 65536)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            os.read(fd, 65536)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        os.write(fd, REPLY)


def _websocket(sock: trio.socket.SocketType, nursery: trio.Nursery, heartbeat: bool) -> WebSocket:
    transport = Transport(trio.SocketStream(sock), nursery=nursery)
    protocol = ServerCore(max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
    protocol.fast_path = FAST_PATH[0]
    ws = WebSocket(
        protocol,
        transport,
        nursery=nursery,
        is_client=False,
        path="/echo",
        remote=None,
        request_head=None,
        close_timeout=1.0,
        max_message_size=1 << 20,
    )
    if heartbeat:
        ws._watch_idle(trio.CancelScope(), 60.0)
    return ws


async def _all_clients(clients: list[trio.socket.SocketType], count: int) -> None:
    async with trio.open_nursery() as nursery:
        for sock in clients:
            nursery.start_soon(_client, sock, count)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected (server side, client side) TCP pair on 127.0.0.1, without Nagle's delay."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for sock in (server, client):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, client


def _per_client(round_trips: int, connections: int) -> int:
    return max(1, round_trips // connections)


async def _run(kind: str, connections: int, count: int, heartbeat: bool, tcp: bool) -> float:
    """CPU microseconds per round trip with ``connections`` clients sharing ``count`` round trips."""
    pairs = [_tcp_pair() if tcp else socket.socketpair() for _ in range(connections)]
    per_client = _per_client(count, connections)
    async with trio.open_nursery() as nursery:
        clients = []
        for left, right in pairs:
            server_sock = trio.socket.from_stdlib_socket(left)
            clients.append(trio.socket.from_stdlib_socket(right))
            if kind == "raw":
                nursery.start_soon(_raw_server, server_sock)
            else:
                nursery.start_soon(_trionos_server, _websocket(server_sock, nursery, heartbeat))
        await _all_clients(clients, _per_client(WARMUP_ROUND_TRIPS, connections))
        start = time.process_time()
        await _all_clients(clients, per_client)
        elapsed = time.process_time() - start
        nursery.cancel_scope.cancel()
    for left, right in pairs:
        left.close()
        right.close()
    return elapsed / (per_client * connections) * 1e6


@contextmanager
def _timing_the_core(totals: list[int]) -> Iterator[None]:
    """Time every ``feed`` of the server core in place: [nanoseconds, calls]."""
    original = ServerCore.feed
    clock = time.perf_counter_ns

    def timed(self: ServerCore, data: bytes | bytearray) -> int:
        start = clock()
        frames = original(self, data)
        totals[0] += clock() - start
        totals[1] += 1
        return frames

    ServerCore.feed = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        ServerCore.feed = original  # type: ignore[method-assign]


@contextmanager
def _counting_collections(totals: list[float]) -> Iterator[None]:
    """Count the cyclic GC's collections and their time: [collections, seconds]."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            totals[0] += 1
            totals[1] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


def _tight_loop_parse(fast: bool, count: int = 100_000) -> float:
    protocol = ServerCore(max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
    protocol.fast_path = fast
    inbox = protocol.inbox
    start = time.perf_counter_ns()
    for _ in range(count):
        protocol.feed(FRAME)
        inbox.clear()
    return (time.perf_counter_ns() - start) / count / 1000


async def _main(connections: int, count: int, rounds: int, heartbeat: bool, tcp: bool) -> None:
    results: dict[str, list[float]] = {"raw": [], "trionos": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(await _run(kind, connections, count, heartbeat, tcp))
    core = [0, 0]
    with _timing_the_core(core):
        await _run("trionos", connections, count, heartbeat, tcp)
    collections = [0.0, 0.0]
    with _counting_collections(collections):
        await _run("trionos", connections, count, heartbeat, tcp)
    raw, ours = min(results["raw"]), min(results["trionos"])
    # What the GC-counting run did in all, warm-up included.
    round_trips = (
        _per_client(count, connections) + _per_client(WARMUP_ROUND_TRIPS, connections)
    ) * connections
    print(
        f"{count} round trips of a 64-byte text message over {connections} "
        f"{'TCP connection(s)' if tcp else 'Unix socket pair(s)'}, best of {rounds}, CPU time per round trip"
    )
    print(f"  raw trio socket I/O:  {raw:6.2f} us")
    print(f"  trionos WebSocket:    {ours:6.2f} us{' (heartbeat on)' if heartbeat else ''}")
    print(f"  the layer:            {ours - raw:6.2f} us")
    path = "fast path" if FAST_PATH[0] else "websockets' core only"
    print(f"    of which the parse ({path}), in place:  {core[0] / core[1] / 1000:6.2f} us")
    print(f"    (the same parse in a tight loop, fast path:            {_tight_loop_parse(True):6.2f} us)")
    print(f"    (the same parse in a tight loop, websockets' core only: {_tight_loop_parse(False):6.2f} us)")
    print(
        f"  cyclic GC in the trionos run (thresholds {gc.get_threshold()}): {collections[0]:.0f} "
        f"collections ({collections[0] / round_trips * 1000:.2f} per 1,000 round trips), "
        f"{collections[1] / round_trips * 1e6:.2f} us per round trip"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1, help="socket pairs (default 1)")
    parser.add_argument(
        "--messages", type=int, default=20_000, help="round trips per run, all connections together"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tcp", action="store_true", help="TCP over 127.0.0.1 instead of Unix socket pairs")
    parser.add_argument("--heartbeat", action="store_true", help="an idle deadline, as serve() sets")
    parser.add_argument("--gc-threshold", type=int, help="the cyclic GC's first threshold (default 700)")
    parser.add_argument("--no-fast-path", action="store_true", help="every frame through websockets' parser")
    args = parser.parse_args()
    FAST_PATH[0] = not args.no_fast_path
    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    trio.run(_main, args.connections, args.messages, args.rounds, args.heartbeat, args.tcp)


if __name__ == "__main__":
    main()
