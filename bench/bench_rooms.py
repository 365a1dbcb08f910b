"""Large rooms: what joining, leaving and mass-disconnecting one big room costs, against broadcast.

Run ``python bench/bench_rooms.py [--members N]`` (default 2,000; the issue measured 5,000). It
starts ``examples/room_chat.py`` on a free 127.0.0.1 port and drives N picows clients (the load
generator's) through four phases, all in one room:

1. **join wave**: the N open connections all send ``join`` at once. The room chat answers each
   with a ``welcome`` and tells everyone already there (``joined``): N(N-1)/2 deliveries.
2. **broadcast**: the reference. 200 ``chat`` messages from the first members, N-1 deliveries
   each: the plain broadcast throughput of the same server and room.
3. **leave wave**: half the members send ``leave`` at once; the others see each ``left``.
4. **mass disconnect**: the other half drop their TCP connections at once, without a close frame;
   the server says ``left`` for each to members that are gone or going.

For each phase it prints the deliveries, deliveries per second and the server's CPU microseconds
per delivery, with the ratio of the waves to the broadcast; and the server's RSS before the join
wave, at its peak, after the mass disconnect (settled: no CPU used for a second) and once every
connection is closed. ``--cycles`` (2) repeats it all on the same server: memory that a cycle
leaves behind and the next one reuses is held by the allocator, memory that grows with every
cycle is a leak. Every wait is bounded by ``--timeout``. Loopback only. Other work on the
machine moves the rates; the CPU per delivery barely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import TEXT, Base, connect_many, raise_nofile_limit, read_cpu_s, read_rss_kib

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "room_chat.py"
ROOM = "big"
CHATS = 200


class Counts:
    """Frames received by every client together, by type."""

    def __init__(self) -> None:
        self.frames = 0
        self.welcomes = 0


class Member(Base):
    """A room-chat client that only counts what it receives."""

    def __init__(self, counts: Counts, index: int) -> None:
        self.counts = counts
        self.index = index

    def send_json(self, obj: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(TEXT, json.dumps(obj, separators=(",", ":")).encode())

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type != TEXT:
            return
        self.counts.frames += 1
        if frame.get_payload_as_bytes().startswith(b'{"type":"welcome"'):
            self.counts.welcomes += 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(port: int) -> asyncio.subprocess.Process:
    profile = os.environ.get("BENCH_ROOMS_PROFILE")  # a path: run the server under cProfile
    command = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), str(SCRIPT)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--heartbeat-interval", "3600", "--heartbeat-timeout", "7200"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )

    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    deadline = time.monotonic() + 20
    while not await listening():
        if time.monotonic() > deadline or proc.returncode is not None:
            raise SystemExit("room_chat.py did not start listening within 20 s")
        await asyncio.sleep(0.05)
    return proc


async def settle(pid: int, within: float) -> float:
    """Wait until the server used no CPU for one second; return the seconds that took."""
    started = time.monotonic()
    last = read_cpu_s(pid)
    while time.monotonic() - started < within:
        await asyncio.sleep(1.0)
        now = read_cpu_s(pid)
        if now == last:
            break
        last = now
    return time.monotonic() - started


class Phase:
    """Wall time, server CPU and peak RSS from creation to :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.wall = time.monotonic()
        self.cpu = read_cpu_s(pid)
        self.peak_rss = read_rss_kib(pid)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, read_rss_kib(self.pid))

    def stop(self, deliveries: int) -> dict[str, float]:
        seconds = time.monotonic() - self.wall
        cpu = read_cpu_s(self.pid) - self.cpu
        return {
            "rss_after_kib": read_rss_kib(self.pid),
            "deliveries": deliveries,
            "seconds": round(seconds, 2),
            "deliveries_per_s": round(deliveries / seconds),
            "server_cpu_s": round(cpu, 2),
            "server_us_per_delivery": round(1e6 * cpu / deliveries, 2) if deliveries else 0.0,
        }


async def until_frames(counts: Counts, expected: int, phase: Phase, within: float) -> None:
    """Wait until ``expected`` frames arrived in all, sampling the server's RSS meanwhile."""
    deadline = time.monotonic() + within
    while counts.frames < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {counts.frames} of {expected} frames arrived within {within:.0f} s")
        phase.sample()
        await asyncio.sleep(0.05)


async def one_cycle(url: str, pid: int, n: int, within: float) -> dict[str, Any]:
    """Connect n members, run the four phases, close every connection; the figures of each."""
    counts = Counts()
    members: list[Member] = []
    try:
        opened, errors = await connect_many(
            url,
            [lambda i=i: Member(counts, i) for i in range(n)],
            concurrency=200,
            handshake_s=60,
            read_buffer=1024,
        )
        members = sorted(opened, key=lambda m: m.index)  # type: ignore[attr-defined]
        if len(members) < n:
            raise SystemExit(f"only {len(members)} of {n} connected: {errors}")
        await settle(pid, 10)
        result: dict[str, Any] = {"rss_connected_kib": read_rss_kib(pid)}

        phase = Phase(pid)
        for m in members:
            m.send_json({"type": "join", "username": f"u{m.index:05d}", "room": ROOM})
        await until_frames(counts, n + n * (n - 1) // 2, phase, within)
        result["join_wave"] = phase.stop(n * (n - 1) // 2 + n)
        peak = phase.peak_rss

        counts.frames = 0
        phase = Phase(pid)
        for i in range(CHATS):
            members[i % n].send_json({"type": "chat", "text": f"u{i:05d} says hello"})
        await until_frames(counts, CHATS * (n - 1), phase, within)
        result["broadcast"] = phase.stop(CHATS * (n - 1))
        peak = max(peak, phase.peak_rss)

        counts.frames = 0
        leaving, staying = members[: n // 2], members[n // 2 :]
        phase = Phase(pid)
        for m in leaving:
            m.send_json({"type": "leave"})
        expected = sum(n - k for k in range(1, len(leaving) + 1))
        await until_frames(counts, expected, phase, within)
        result["leave_wave"] = phase.stop(expected)
        peak = max(peak, phase.peak_rss)

        phase = Phase(pid)
        for m in staying:
            if m.transport is not None:
                m.transport.disconnect(graceful=False)
        settle_s = await settle(pid, within)
        stats = phase.stop(0)
        result["mass_disconnect"] = {"settle_s": round(settle_s, 2), "server_cpu_s": stats["server_cpu_s"]}
        result["rss_peak_kib"] = max(peak, phase.peak_rss)
        result["rss_after_kib"] = read_rss_kib(pid)
        for name in ("join_wave", "leave_wave"):
            result[name]["ratio_to_broadcast"] = round(
                result[name]["deliveries_per_s"] / result["broadcast"]["deliveries_per_s"], 2
            )
        return result
    finally:
        for m in members:
            if m.transport is not None:
                m.transport.disconnect(graceful=False)
        await settle(pid, within)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = await start_server(port)
    try:
        url = f"ws://127.0.0.1:{port}/"
        result: dict[str, Any] = {
            "members": args.members,
            "rss_start_kib": read_rss_kib(proc.pid),
            "cycles": [],
        }
        for _ in range(args.cycles):
            cycle = await one_cycle(url, proc.pid, args.members, args.timeout)
            cycle["rss_all_closed_kib"] = read_rss_kib(proc.pid)
            result["cycles"].append(cycle)
        return result
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def report(result: dict[str, Any]) -> None:
    mib = 1024
    print(f"one room, {result['members']} members (examples/room_chat.py, loopback)")
    print(f"server RSS at start (no connection): {result['rss_start_kib'] / mib:.1f} MiB")
    for number, cycle in enumerate(result["cycles"], 1):
        print(f"cycle {number}: RSS {cycle['rss_connected_kib'] / mib:.1f} MiB with every member connected")
        print(
            f"  {'phase':<16}{'deliveries':>12}{'seconds':>9}{'deliv/s':>10}{'µs/deliv':>10}{'ratio':>7}"
            f"{'RSS after':>11}"
        )
        for name in ("join_wave", "broadcast", "leave_wave"):
            r = cycle[name]
            ratio = r.get("ratio_to_broadcast", 1.0)
            print(
                f"  {name:<16}{r['deliveries']:>12}{r['seconds']:>9}{r['deliveries_per_s']:>10}"
                f"{r['server_us_per_delivery']:>10}{ratio:>7}{r['rss_after_kib'] / mib:>8.1f} MiB"
            )
        md = cycle["mass_disconnect"]
        print(
            f"  mass disconnect of half: settled in {md['settle_s']} s, server CPU {md['server_cpu_s']} s; "
            f"RSS peak {cycle['rss_peak_kib'] / mib:.1f} MiB, {cycle['rss_after_kib'] / mib:.1f} MiB after, "
            f"{cycle['rss_all_closed_kib'] / mib:.1f} MiB once every connection is closed"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000, help="members of the one room (default 2000)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any phase may take")
    parser.add_argument(
        "--cycles", type=int, default=2, help="connect, fill, empty, close this many times (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    raise_nofile_limit()
    result = asyncio.run(run(args))
    print(json.dumps(result)) if args.json else report(result)


if __name__ == "__main__":
    main()
