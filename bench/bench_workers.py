"""Workers on one port: ``trionos --workers 2`` against ``--workers 1`` in the same run.

Each run starts the real command (``python -m trionos trionos_app:app --app-dir bench/servers``),
reads its workers' pids from its log, runs ``bench/loadgen.py`` once and stops it with SIGTERM.
Modes take turns (A B C, A B C, ...) for ``--rounds`` rounds and the medians are compared:

- ``w1``: one process (the runner serves in its own process).
- ``w2``: the supervisor and two workers accepting on one inherited socket (what ``--workers``
  does).
- ``reuseport``: two independent ``--workers 1 --reuse-port`` processes on the same port, each
  with its own ``SO_REUSEPORT`` socket (the alternative docs/design.md weighs).

Echo: ``--clients`` clients in a closed loop. Reported: messages/s, the ratio to ``w1``, the
load generator's CPU %, the server's CPU per message (every server process, measured from
``/proc`` over the whole load run, so connection set-up is included, the same for every mode),
and how the server CPU split between the workers (how evenly connections were spread).

Broadcast (``--subscribers``, default 1,000): the same app on Redis (``BENCH_REDIS``, a private
redis-server), one worker against two, subscribers spread over both; deliveries/s.

Restart (``--restart-check``): clients open connection after connection (a GET each) while the
server replaces its processes: ``w2`` by SIGHUP (the rolling restart), ``reuseport`` by starting
a third process and then stopping the first, the way independently started processes would be
replaced. Reported: requests answered and connections refused or reset during the replacement.

Nothing is pinned to a core: two workers need both. Linux only (``/proc``).

    python bench/bench_workers.py                 # echo and broadcast, 3 rounds
    python bench/bench_workers.py --rounds 1 --duration 2 --no-broadcast
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.redis_server import RedisServer, free_port  # noqa: E402

LOADGEN = ROOT / "bench" / "loadgen.py"
LISTENING = re.compile(rb"trionos listening on http://127\.0\.0\.1:(\d+)/")
WORKER = re.compile(rb"worker \d+ serving \(pid (\d+)\)")
START_TIMEOUT = 30.0
#: The command's settings for a load test from one machine: no per-address limit, no heartbeat,
#: no access log (a line per connection is not what is measured).
SERVER_FLAGS = (
    "--max-connections-per-address",
    "none",
    "--max-connections",
    "20000",
    "--no-heartbeat",
    "--no-access-log",
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of *pid* so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One or more trionos processes serving one port, and the pids that do the work."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []  # every process that serves or supervises
        self.workers: list[int] = []  # the processes that serve
        self.port = 0

    def start(self, workers: int, *, port: int = 0, reuse_port: bool = False, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "trionos", "trionos_app:app", "--app-dir", "bench/servers"]
        command += ["--port", str(port), "--workers", str(workers), *SERVER_FLAGS]
        if reuse_port:
            command.append("--reuse-port")
        process = subprocess.Popen(
            command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        self.processes.append(process)
        self.pids.append(process.pid)
        assert process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                raise RuntimeError(f"trionos exited with {process.wait()} before listening")
            if match := WORKER.search(line):
                self.workers.append(int(match.group(1)))
                self.pids.append(int(match.group(1)))
            if match := LISTENING.search(line):
                self.port = int(match.group(1))
                if workers == 1:
                    self.workers.append(process.pid)
                return
        raise RuntimeError("trionos did not start in time")

    def follow(self) -> list[bytes]:
        """Keep reading every process's log in threads; the lines, as they come."""
        lines: list[bytes] = []
        for process in self.processes:
            assert process.stderr is not None
            threading.Thread(
                target=lambda s=process.stderr: lines.extend(iter(s.readline, b"")), daemon=True
            ).start()
        return lines

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serving(mode: str, env: dict[str, str]) -> Iterator[Server]:
    server = Server()
    try:
        if mode == "w1":
            server.start(1, env=env)
        elif mode == "w2":
            server.start(2, env=env)
        elif mode == "reuseport":
            server.start(1, reuse_port=True, env=env)
            server.start(1, port=server.port, reuse_port=True, env=env)
        else:
            raise ValueError(mode)
        yield server
    finally:
        server.stop()


def load(server: Server, scenario: str, arguments: Sequence[str]) -> dict[str, Any]:
    """Run the load generator once; its result, plus the server CPU over the run."""
    before = server.cpu()
    command = [
        sys.executable,
        str(LOADGEN),
        scenario,
        "--url",
        f"ws://127.0.0.1:{server.port}/",
        *arguments,
        "--json",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    after = server.cpu()
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "error": done.stderr[-800:]}
    spent = {pid: after[pid] - before[pid] for pid in before}
    total = sum(spent.values())
    count = result.get("messages") or result.get("deliveries") or 0
    result["server_cpu_s_total"] = round(total, 2)
    result["server_us_per_msg_total"] = round(1e6 * total / count, 2) if count else None
    shares = sorted((spent[pid] for pid in server.workers), reverse=True)
    result["worker_cpu_split"] = [round(100 * share / total) for share in shares] if total else []
    return result


def hammer(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    """GET / on a new connection each time until *stop*; count answers, and failures by kind."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = sock.recv(64)
            outcome = "answered" if head.startswith(b"HTTP/1.1 200") else f"answer {head[:12]!r}"
        except OSError as exc:
            outcome = type(exc).__name__
        counts[outcome] = counts.get(outcome, 0) + 1


def restart_check(mode: str, env: dict[str, str], clients: int = 4) -> dict[str, int]:
    """Replace every serving process under connection load; how many connections failed."""
    with serving(mode, env) as server:
        lines = server.follow()
        stop, counts = threading.Event(), {"answered": 0}
        threads = [threading.Thread(target=hammer, args=(server.port, stop, counts)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # load before the replacement (a benchmark's pacing, not a synchronisation)
        if mode == "w2":
            server.processes[0].send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while not any(b"rolling restart done" in line for line in list(lines)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the rolling restart did not finish")
                time.sleep(0.05)
        else:
            for _ in range(2):  # replace both: start a new process, then stop an old one
                old = server.processes.pop(0)
                server.start(1, port=server.port, reuse_port=True, env=env)
                old.send_signal(signal.SIGTERM)
                old.wait(20)
        time.sleep(0.5)  # load after it
        stop.set()
        for thread in threads:
            thread.join()
    return counts


def restarts(env: dict[str, str], rounds: int) -> dict[str, list[dict[str, int]]]:
    """The restart check, *rounds* times per mode; prints each and returns the counts."""
    results: dict[str, list[dict[str, int]]] = {"w2": [], "reuseport": []}
    for round_no in range(rounds):
        for mode, runs in results.items():
            counts = restart_check(mode, env)
            runs.append(counts)
            failed = {kind: count for kind, count in counts.items() if kind != "answered"}
            print(
                f"  restart round {round_no + 1} {mode:<10} {counts['answered']} answered, "
                f"{sum(failed.values())} failed {failed}",
                flush=True,
            )
    return results


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get("ok", True) and isinstance(run.get(key), int | float)]
    return statistics.median(values) if values else None


def compare(
    name: str, modes: Sequence[str], runs: dict[str, list[dict[str, Any]]], metric: str
) -> dict[str, Any]:
    base = median(runs[modes[0]], metric)
    print(f"\n{name}")
    print(
        f"  {'mode':<10} {metric:>16} {'x ' + modes[0]:>8} {'loadgen CPU %':>14} {'server us/msg':>14}  split"
    )
    summary: dict[str, Any] = {}
    for mode in modes:
        value = median(runs[mode], metric)
        ratio = value / base if value and base else None
        loadgen = median(runs[mode], "loadgen_cpu_pct")
        per_msg = median(runs[mode], "server_us_per_msg_total")
        split = runs[mode][-1].get("worker_cpu_split") if runs[mode] else None
        summary[mode] = {
            metric: value,
            "ratio": ratio,
            "loadgen_cpu_pct": loadgen,
            "server_us_per_msg": per_msg,
        }
        figures = f"{value or 0:>16,.0f} {ratio or 0:>8.2f} {loadgen or 0:>14.1f} {per_msg or 0:>14.1f}"
        print(f"  {mode:<10} {figures}  {split}")
    return summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run (default 4)")
    parser.add_argument("--clients", type=int, default=50, help="echo clients (default 50)")
    parser.add_argument("--modes", default="w1,w2,reuseport", help="echo modes (default w1,w2,reuseport)")
    parser.add_argument("--subscribers", type=int, default=1000, help="broadcast subscribers (default 1000)")
    parser.add_argument("--broadcast-modes", default="w1,w2", help="broadcast modes (default w1,w2)")
    parser.add_argument("--restart-check", action="store_true", help="only the restart check")
    parser.add_argument("--no-broadcast", action="store_true", help="skip the broadcast over Redis")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    report: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "config": {k: str(v) for k, v in vars(args).items()},
    }
    if args.restart_check:
        restarts(env, args.rounds)
        return 0
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    echo: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    # warmup 0: the server's CPU is read over the whole load run, so nothing unmeasured is added.
    echo_args = ("--clients", str(args.clients), "--duration", str(args.duration), "--warmup", "0")
    for round_no in range(args.rounds):
        for mode in modes:
            with serving(mode, env) as server:
                result = load(server, "echo", echo_args)
            echo[mode].append(result)
            print(
                f"  echo round {round_no + 1} {mode:<10} {result.get('msgs_per_s', 'FAILED')} msgs/s",
                flush=True,
            )
    report["echo"] = {
        "summary": compare(f"echo, {args.clients} clients", modes, echo, "msgs_per_s"),
        "runs": echo,
    }
    if not args.no_broadcast:
        redis = RedisServer("redis-server", free_port())
        redis.start()
        try:
            fanout: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.broadcast_modes.split(",")}
            broadcast_args = ("--subscribers", str(args.subscribers), "--duration", str(args.duration))
            for round_no in range(args.rounds):
                for mode in fanout:
                    with serving(mode, {**env, "BENCH_REDIS": redis.url}) as server:
                        result = load(server, "broadcast", broadcast_args)
                    fanout[mode].append(result)
                    rate = result.get("deliveries_per_s", "FAILED")
                    print(f"  broadcast round {round_no + 1} {mode:<10} {rate} deliveries/s", flush=True)
        finally:
            redis.stop()
        summary = compare(
            f"broadcast to {args.subscribers:,} over Redis", list(fanout), fanout, "deliveries_per_s"
        )
        report["broadcast_redis"] = {"summary": summary, "runs": fanout}
    report["restart"] = restarts(env, args.rounds)
    report["load_after"] = os.getloadavg()
    print(f"\nload average before {report['load_before']}, after {report['load_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
