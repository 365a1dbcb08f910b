"""Which sans-I/O core parses frames faster: websockets' ``Protocol`` or wsproto?

Run ``python bench/bench_protocol.py [--frames N]``. Both cores, in this process, parse the same
masked client frames (as a server receives them) fed one frame per ``receive_data`` call, as an
echo server sees them, and then in one 64 KiB batch, as a busy server reads them. Prints the cost
per frame of each core and the ratio. No sockets; the figures are CPU time of the parse alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.frames import Opcode as WsOpcode
from websockets.protocol import Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Message

from trionos._frames import OP_TEXT, encode_frame


def _websockets_parser() -> Callable[[bytes], int]:
    protocol = Protocol(Side.SERVER, max_size=1 << 20)

    def feed(data: bytes) -> int:
        protocol.receive_data(data)
        events = protocol.events_received()
        # What a connection does with each frame: take the text out of it.
        for frame in events:
            if frame.opcode is WsOpcode.TEXT:
                bytes(frame.data).decode()
        return len(events)

    return feed


def _wsproto_parser() -> Callable[[bytes], int]:
    connection = Connection(ConnectionType.SERVER)

    def feed(data: bytes) -> int:
        connection.receive_data(data)
        count = 0
        for event in connection.events():
            assert isinstance(event, Message)
            count += 1
        return count

    return feed


def _time(make: Callable[[], Callable[[bytes], int]], chunks: list[bytes], frames: int) -> float:
    feed = make()
    start = time.perf_counter()
    got = 0
    for chunk in chunks:
        got += feed(chunk)
    elapsed = time.perf_counter() - start
    assert got == frames, f"expected {frames} frames, parsed {got}"
    return elapsed / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=32, help="payload bytes per frame (default 32)")
    args = parser.parse_args()
    frame = encode_frame(OP_TEXT, b"x" * args.size, masked=True)
    singles = [encode_frame(OP_TEXT, b"x" * args.size, masked=True) for _ in range(args.frames)]
    per_batch = max(1, 65536 // len(frame))
    batches = [b"".join(singles[i : i + per_batch]) for i in range(0, len(singles), per_batch)]
    print(f"{args.frames} masked text frames of {args.size} bytes ({len(frame)} on the wire)")
    for label, chunks in (("one frame per feed", singles), ("64 KiB per feed", batches)):
        results = {}
        for name, make in (("websockets Protocol", _websockets_parser), ("wsproto", _wsproto_parser)):
            # Best of three: the figures are for a quiet CPU, and others may share it.
            results[name] = min(_time(make, chunks, args.frames) for _ in range(3))
        ws, wp = results["websockets Protocol"], results["wsproto"]
        print(f"{label:>20}: websockets {ws:.2f} us/frame, wsproto {wp:.2f} us/frame, ratio {wp / ws:.2f}x")


if __name__ == "__main__":
    main()
