"""Where does an idle connection's memory go? Per-connection allocations, site by site.

Run ``python bench/bench_memory.py [--connections N] [--top K]``. For trionos (with its heartbeat
and every connection in a hub room, as in the idle scenario of ``make bench``) and for raw
trio-websocket, it runs the bench server *in this process* under ``tracemalloc``, opens N idle
WebSocket connections with the load generator in another process, and compares snapshots taken
before and after. It prints the traced bytes per connection of each server, then the allocation
sites where the two differ most (positive: trionos holds more there).

``tracemalloc`` sees Python allocations only and slows the server down; RSS per connection, the
figure ``make bench`` reports, is about 1 KiB above the traced one for both servers. Use this to
find what to cut, and ``make bench`` (``--only idle``) to measure the result.
"""

from __future__ import annotations

import argparse
import functools
import gc
import linecache
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH / "servers"))
sys.path.insert(0, str(BENCH.parent))

#: What is left out of a site's path when it is printed.
_PREFIXES = (trio.__file__.rsplit("/", 2)[0] + "/", str(BENCH.parent) + "/")


def _starter(name: str) -> Callable[..., Awaitable[Any]]:
    if name == "trionos":
        import trionos_server

        return functools.partial(trionos_server.run, "127.0.0.1", 0, True)
    import trio_websocket_naive

    return functools.partial(trio_websocket_naive.serve, "127.0.0.1", 0)


async def _measure(name: str, connections: int) -> tuple[float, dict[str, float]]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_starter(name))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        open_fds = len(os.listdir("/proc/self/fd"))
        loadgen = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(BENCH / "loadgen.py"),
                "idle",
                "--url",
                f"ws://127.0.0.1:{port}/subscribe",
                "--clients",
                str(connections),
                "--server-pid",
                str(os.getpid()),
                "--duration",
                "600",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            # Every connection holds a descriptor: wait until they are all open, then settle. The
            # load generator is another process and says nothing until it ends, so poll.
            while len(os.listdir("/proc/self/fd")) < open_fds + connections:  # noqa: ASYNC110
                await trio.sleep(0.2)
            await trio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            loadgen.kill()
            await loadgen.wait()
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    sites = {
        f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}": stat.size_diff / connections
        for stat in after.compare_to(before, "lineno")
    }
    return sum(sites.values()), sites


def _describe(site: str) -> str:
    filename, _, line = site.rpartition(":")
    source = linecache.getline(filename, int(line)).strip()[:60]
    for prefix in _PREFIXES:
        filename = filename.removeprefix(prefix)
    return f"{filename}:{line}  {source}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="idle connections (default 2000)")
    parser.add_argument("--top", type=int, default=25, help="sites to list (default 25)")
    args = parser.parse_args()
    totals: dict[str, float] = {}
    sites: dict[str, dict[str, float]] = {}
    for name in ("trionos", "trio-websocket"):
        totals[name], sites[name] = trio.run(_measure, name, args.connections)
        print(f"{name:>15}: {totals[name] / 1024:6.2f} KiB traced per idle connection", flush=True)
    print(f"{'difference':>15}: {(totals['trionos'] - totals['trio-websocket']) / 1024:+6.2f} KiB\n")
    mine, theirs = sites["trionos"], sites["trio-websocket"]
    deltas = sorted(
        ((mine.get(s, 0.0) - theirs.get(s, 0.0), s) for s in mine.keys() | theirs.keys()), reverse=True
    )
    big = [d for d in deltas if abs(d[0]) >= 32]
    shown = big if len(big) <= 2 * args.top else big[: args.top] + big[-args.top :]
    print("bytes/conn  site (trionos minus trio-websocket)")
    for delta, site in shown:
        print(f"{delta:+10.0f}  {_describe(site)}")


if __name__ == "__main__":
    main()
