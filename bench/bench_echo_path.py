"""What the connection layer costs per echoed message, above raw Trio socket I/O.

Run ``python bench/bench_echo_path.py [--messages N] [--rounds R] [--heartbeat]``. One Trio
process, one socket pair: a client task writes a masked 64-byte text frame, waits for the
reply, and repeats; the server side is either a ``trionos`` WebSocket (``async for`` and
``send``, as the echo bench server does) or the same loop on raw ``os.read``/``os.write`` with
Trio's checkpoints (the floor). The figure is process CPU time per round trip (client and
server), best of ``--rounds`` alternating runs; the difference is the layer: websockets' parser,
our framing and bookkeeping, the coroutines in between. No load generator, no second process,
so it moves much less than ``make bench`` when the machine is shared. ``--heartbeat`` puts the
connection under an idle deadline (60 s), as ``serve`` does by default.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import trio
from websockets.protocol import OPEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trionos._connection import ProtocolLog, ServerCore, WebSocket
from trionos._frames import OP_TEXT, encode_frame
from trionos._transport import Transport

FRAME = encode_frame(OP_TEXT, b"x" * 64, masked=True)
REPLY = encode_frame(OP_TEXT, b"x" * 64)  # what the server sends back: the same text, unmasked


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


async def _run(kind: str, count: int, heartbeat: bool) -> float:
    left, right = socket.socketpair()
    server_sock = trio.socket.from_stdlib_socket(left)
    client_sock = trio.socket.from_stdlib_socket(right)
    async with trio.open_nursery() as nursery:
        if kind == "trionos":
            transport = Transport(trio.SocketStream(server_sock), nursery=nursery)
            protocol = ServerCore(max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
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
            nursery.start_soon(_trionos_server, ws)
        else:
            nursery.start_soon(_raw_server, server_sock)
        await _client(client_sock, 2_000)  # warm up
        start = time.process_time()
        await _client(client_sock, count)
        elapsed = time.process_time() - start
        nursery.cancel_scope.cancel()
    left.close()
    right.close()
    return elapsed / count * 1e6


async def _main(count: int, rounds: int, heartbeat: bool) -> None:
    results: dict[str, list[float]] = {"raw": [], "trionos": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(await _run(kind, count, heartbeat))
    raw, ours = min(results["raw"]), min(results["trionos"])
    print(f"{count} round trips of a 64-byte text message, best of {rounds}, CPU time per round trip")
    print(f"  raw trio socket I/O: {raw:6.2f} us")
    print(f"  trionos WebSocket:   {ours:6.2f} us{' (heartbeat on)' if heartbeat else ''}")
    print(f"  the layer:           {ours - raw:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heartbeat", action="store_true", help="an idle deadline, as serve() sets")
    args = parser.parse_args()
    trio.run(_main, args.messages, args.rounds, args.heartbeat)


if __name__ == "__main__":
    main()
