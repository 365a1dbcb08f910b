"""Run every benchmark scenario against trionos and its peers; print medians and ratios.

This is what ``make bench`` runs. For each scenario the servers take turns (A B C A B C ...)
for ``--rounds`` rounds, so slow drift of the machine (other processes, thermal state) is spread
over all of them instead of landing on one. Each run starts a fresh server process, waits for it
to listen, runs ``bench/loadgen.py`` once in its own process, and stops the server. On a machine
with two or more cores the server is pinned to one core and the load generator to another.

Output: a table of medians per scenario with the ratio trionos / peer, the raw results in
``bench/results/latest.json`` (``--out``), and a chart (``--chart``, default
``bench/results/performance.png``) when matplotlib is installed.

    python bench/run.py                  # full run, about 10 minutes on 2 cores
    python bench/run.py --quick          # smoke run, a minute or two
    python bench/run.py --only echo --servers trionos,websockets-asyncio --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LOADGEN = BENCH / "loadgen.py"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
SERVER_CPU, LOADGEN_CPU = 1, 0


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How to start one server. Paths are relative to the repository root."""

    name: str
    script: str
    #: The chat-protocol server of this library, if it has one, and the path it serves on.
    chat_script: str | None = None
    chat_path: str = "/"
    #: Extra arguments for the chat server.
    chat_args: tuple[str, ...] = ()
    #: Extra arguments for the idle scenario (trionos turns its heartbeat on there).
    idle_args: tuple[str, ...] = ()
    #: Does it speak WebSocket? The raw TCP ceiling only does newline-framed echo.
    websocket: bool = True


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "trionos",
            "bench/servers/trionos_server.py",
            chat_script="examples/room_chat.py",
            # The framework, not the example's policies: no per-client rate limit (10 msgs/s by
            # default) and no history, like the websockets chat server it is compared with.
            chat_args=("--rate-limit", "0", "--no-history"),
            idle_args=("--heartbeat",),
        ),
        ServerSpec("trio-websocket", "bench/servers/trio_websocket_naive.py"),
        ServerSpec("trio-websocket-channels", "bench/servers/trio_websocket_channels.py"),
        ServerSpec("websockets-trio", "bench/servers/websockets_trio.py"),
        ServerSpec(
            "websockets-asyncio",
            "bench/servers/websockets_asyncio.py",
            chat_script="bench/servers/websockets_asyncio_chat.py",
        ),
        ServerSpec("picows", "bench/servers/picows_server.py"),
        ServerSpec("raw-trio-tcp", "bench/servers/raw_trio_tcp.py", websocket=False),
        ServerSpec("raw-trio-socket", "bench/servers/raw_trio_socket.py", websocket=False),
    )
}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the results: a loadgen scenario with fixed counts, run against some servers."""

    name: str
    kind: str  # the loadgen scenario
    title: str
    servers: tuple[str, ...]
    loadgen_args: tuple[str, ...]
    metric: str
    unit: str
    higher_is_better: bool
    extras: tuple[tuple[str, str], ...] = ()  # (result key, column title)
    budget_s: float = 60.0  # wall-clock budget of one loadgen run before it is killed


ECHO_SERVERS = (
    "trionos",
    "trio-websocket",
    "websockets-trio",
    "websockets-asyncio",
    "picows",
    "raw-trio-tcp",
    "raw-trio-socket",
)
FANOUT_SERVERS = (
    "trionos",
    "trio-websocket",
    "trio-websocket-channels",
    "websockets-trio",
    "websockets-asyncio",
    "picows",
)
CHAT_SERVERS = ("trionos", "websockets-asyncio")
LATENCY = (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"))
CPU = (("server_cpu_pct", "server CPU %"), ("loadgen_cpu_pct", "loadgen CPU %"))
PER_MSG = (("server_us_per_msg", "server us/msg"),)
PER_DELIVERY = (("server_us_per_delivery", "server us/delivery"),)


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    timing = ("--duration", str(args.duration), "--warmup", str(args.warmup))
    scenarios = [
        Scenario(
            f"echo-{n}",
            "echo",
            f"echo, {n:,} client{'s' if n != 1 else ''} in a closed loop",
            ECHO_SERVERS,
            ("--clients", str(n), *timing),
            "msgs_per_s",
            "msgs/s",
            True,
            (*PER_MSG, *LATENCY, *CPU),
            budget_s=90 + args.duration,
        )
        for n in args.echo_clients
    ]
    scenarios += [
        Scenario(
            f"broadcast-{n}",
            "broadcast",
            f"broadcast to {n:,} subscribers, window {args.window}",
            FANOUT_SERVERS,
            ("--subscribers", str(n), "--window", str(args.window), *timing),
            "deliveries_per_s",
            "deliveries/s",
            True,
            (*PER_DELIVERY, *LATENCY, ("lost", "lost"), *CPU),
            budget_s=120 + args.duration,
        )
        for n in args.subscribers
    ]
    scenarios += [
        Scenario(
            f"idle-{n}",
            "idle",
            f"{n:,} idle connections (trionos with heartbeat)",
            FANOUT_SERVERS,
            ("--clients", str(n), "--duration", str(args.idle_hold)),
            "kib_per_conn",
            "KiB/conn",
            False,
            (("fanout_ms", "fan-out ms"), ("connect_s", "connect s"), ("idle_cpu_pct", "idle CPU %")),
            budget_s=240 + args.idle_hold,
        )
        for n in args.idle_connections
    ]
    if args.chat_clients:
        clients, rooms = args.chat_clients, args.chat_rooms
        scenarios.append(
            Scenario(
                f"chat-{clients}",
                "chat",
                f"room chat, {clients:,} clients in {rooms} rooms, window {args.chat_window}",
                CHAT_SERVERS,
                (
                    "--clients",
                    str(clients),
                    "--rooms",
                    str(rooms),
                    "--window",
                    str(args.chat_window),
                    *timing,
                ),
                "deliveries_per_s",
                "deliveries/s",
                True,
                (*PER_DELIVERY, *LATENCY, *CPU),
                budget_s=120 + args.duration,
            )
        )
    return scenarios


# --------------------------------------------------------------------------------------------
# one run


class ServerFailed(Exception):
    """The server did not start, or died during the run."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> Any:
    def preexec() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})

    return preexec


def tail(stream: TextIO, lines: int = 15) -> str:
    stream.flush()
    stream.seek(0)
    return "".join(stream.readlines()[-lines:]).rstrip()


@contextlib.contextmanager
def running_server(
    spec: ServerSpec, scenario: Scenario, *, pinned: bool, gc_threshold: int | None = None
) -> Iterator[tuple[subprocess.Popen, int, str, TextIO]]:
    """Start the server for ``scenario``, wait until it listens, yield (process, port, path, stderr).

    The server is stopped on exit whatever happens: SIGTERM, then SIGKILL after STOP_TIMEOUT.
    """
    path = ""
    if scenario.kind == "chat":
        if spec.chat_script is None:
            raise ServerFailed(f"{spec.name} has no chat server")
        script, path, extra = spec.chat_script, spec.chat_path, spec.chat_args
    else:
        script, extra = spec.script, spec.idle_args if scenario.kind == "idle" else ()
    if not (ROOT / script).exists():
        raise ServerFailed(f"{script} does not exist")
    port = free_port()
    command = [sys.executable, str(ROOT / script), "--host", "127.0.0.1", "--port", str(port), *extra]
    if gc_threshold is not None:
        launcher = str(BENCH / "servers" / "_launch.py")
        command[1:1] = [launcher, "--gc-threshold", str(gc_threshold)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
            preexec_fn=pin(SERVER_CPU) if pinned else None,
        )
        try:
            port = wait_ready(process, port, out, err)
            yield process, port, path, err
        finally:
            stop(process)


def wait_ready(process: subprocess.Popen, port: int, out: TextIO, err: TextIO) -> int:
    """Wait for ``READY <port>`` on stdout, or (for scripts that print nothing) for the port to accept."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT
    while time.monotonic() < deadline:
        out.flush()
        out.seek(0)
        for line in out.read().splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if process.poll() is not None:
            raise ServerFailed(f"exited with code {process.returncode} before listening:\n{tail(err)}")
        if time.monotonic() - started < 2.0:
            time.sleep(0.02)  # our servers print READY; probe the port only for those that don't
            continue
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            time.sleep(0.2)  # it listens; give a READY line a moment, then trust the port
            return port
        time.sleep(0.05)
    raise ServerFailed(f"not listening after {READY_TIMEOUT:.0f} s:\n{tail(err)}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def run_one(
    spec: ServerSpec, scenario: Scenario, *, pinned: bool, gc_threshold: int | None = None
) -> dict[str, Any]:
    """Run ``scenario`` once against a fresh ``spec`` server; return loadgen's result dict."""
    started = time.monotonic()
    try:
        with running_server(spec, scenario, pinned=pinned, gc_threshold=gc_threshold) as (
            process,
            port,
            path,
            err,
        ):
            kind = scenario.kind
            if not spec.websocket:
                kind, url = "raw-echo", f"tcp://127.0.0.1:{port}"
            else:
                url = f"ws://127.0.0.1:{port}{path}"
            command = [sys.executable, str(LOADGEN), kind, "--url", url, *scenario.loadgen_args]
            command += ["--server-pid", str(process.pid), "--timeout", str(scenario.budget_s), "--json"]
            try:
                done = subprocess.run(
                    command,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=scenario.budget_s + 30,
                    preexec_fn=pin(LOADGEN_CPU) if pinned else None,
                )
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"loadgen did not finish within {scenario.budget_s + 30:.0f} s"}
            lines = done.stdout.strip().splitlines()
            try:
                result = json.loads(lines[-1])
            except (IndexError, ValueError):
                result = {
                    "ok": False,
                    "error": f"loadgen exited {done.returncode}: {done.stderr.strip()[-800:]}",
                }
            if process.poll() is not None:
                result.update(ok=False, error=f"server died during the run:\n{tail(err)}")
            stderr_text = tail(err, 10_000)
            if "Traceback" in stderr_text:
                result["server_tracebacks"] = stderr_text.count("Traceback")
                result["server_stderr_tail"] = tail(err, 8)
    except ServerFailed as exc:
        return {"ok": False, "error": f"server {spec.name} failed: {exc}"}
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


# --------------------------------------------------------------------------------------------
# summary


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("ok") and isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def summarize(scenario: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for name, server_runs in runs.items():
        values = [
            r[scenario.metric] for r in server_runs if r.get("ok") and r.get(scenario.metric) is not None
        ]
        entry: dict[str, Any] = {
            "median": median_of(server_runs, scenario.metric),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "ok_runs": len(values),
            "runs": len(server_runs),
            "errors": sorted({r["error"] for r in server_runs if not r.get("ok")}),
        }
        for key, _ in scenario.extras:
            entry[key] = median_of(server_runs, key)
        servers[name] = entry
    ours = servers.get("trionos", {}).get("median")
    ratios = {
        name: round(ours / entry["median"], 3) if ours and entry["median"] else None
        for name, entry in servers.items()
        if name != "trionos"
    }
    return {
        "title": scenario.title,
        "metric": scenario.metric,
        "unit": scenario.unit,
        "higher_is_better": scenario.higher_is_better,
        "servers": servers,
        "ratio_trionos_over_peer": ratios,
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def print_table(scenario: Scenario, summary: dict[str, Any], out: TextIO = sys.stdout) -> None:
    better = "higher is better" if scenario.higher_is_better else "lower is better"
    print(f"\n{scenario.name}: {scenario.title}; {scenario.unit}, {better}", file=out)
    headers = [
        "server",
        f"median {scenario.unit}",
        "min-max",
        *(t for _, t in scenario.extras),
        "trionos/peer",
    ]
    rows = []
    for name, entry in summary["servers"].items():
        ratio = summary["ratio_trionos_over_peer"].get(name)
        row = [
            name,
            fmt(entry["median"]),
            f"{fmt(entry['min'])}-{fmt(entry['max'])}" if entry["ok_runs"] else "-",
            *(fmt(entry[key]) for key, _ in scenario.extras),
            "(us)" if name == "trionos" else (f"{ratio:.2f}x" if ratio else "-"),
        ]
        if entry["ok_runs"] < entry["runs"]:
            row[0] += f" [{entry['runs'] - entry['ok_runs']}/{entry['runs']} failed]"
        rows.append(row)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [
            str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  " + "  ".join(cells), file=out)
    saturated = [n for n, e in summary["servers"].items() if (e.get("loadgen_cpu_pct") or 0) >= 90]
    if saturated:
        print(
            f"  note: the load generator was at >= 90 % CPU against {', '.join(saturated)}: those "
            "figures are floors; compare the server's CPU per message instead",
            file=out,
        )
    for name, entry in summary["servers"].items():
        for error in entry["errors"]:
            print(f"  ! {name}: {error.splitlines()[0][:300]}", file=out)


def draw_chart(
    scenarios: Sequence[Scenario], summaries: dict[str, Any], path: Path, rounds: int, idle_rounds: int
) -> str:
    """Draw one bar panel per scenario; return a note for the log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, MaxNLocator
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    shown = [s for s in scenarios if s.name in summaries]
    if not shown:
        return "no results to chart"
    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 0.6 + 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    for ax, scenario in zip(axes.flat, shown, strict=False):
        servers = summaries[scenario.name]["servers"]
        names = list(servers)[::-1]
        medians = [servers[n]["median"] or 0 for n in names]
        lows = [m - (servers[n]["min"] or m) for n, m in zip(names, medians, strict=True)]
        highs = [(servers[n]["max"] or m) - m for n, m in zip(names, medians, strict=True)]
        colours = ["#d9480f" if n == "trionos" else "#868e96" for n in names]
        ax.barh(
            names, medians, color=colours, xerr=[lows, highs], error_kw={"ecolor": "#343a40", "capsize": 2}
        )
        for y, name in enumerate(names):
            median = servers[name]["median"]
            label = fmt(median) if median is not None else "failed"
            right = servers[name]["max"] if servers[name]["max"] is not None else (median or 0)
            ax.text(right, y, f"  {label}", va="center", fontsize=8)
        better = "higher is better" if scenario.higher_is_better else "lower is better"
        ax.set_title(f"{scenario.title}\n{scenario.unit}, {better}", fontsize=9)
        pad = max(0, 4 - len(names)) / 2  # same bar thickness in every panel, bars centred
        ax.set_ylim(-0.6 - pad, len(names) - 0.4 + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
        ax.tick_params(labelsize=8)
        ax.margins(x=0.25)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(
        f"trionos vs peers: median of {rounds} run(s) each (idle: {idle_rounds}), whiskers min-max",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"


def environment() -> dict[str, Any]:
    versions = {}
    for package in ("trio", "trio-websocket", "websockets", "picows", "uvloop", "trionos"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if versions["trionos"] is None:  # the working tree, not installed
        init = (ROOT / "trionos" / "__init__.py").read_text() if (ROOT / "trionos").is_dir() else ""
        versions["trionos"] = next(
            (
                line.split("=")[1].strip().strip("\"'")
                for line in init.splitlines()
                if line.startswith("__version__")
            ),
            None,
        )
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, short durations, 1 round")
    parser.add_argument("--rounds", type=int, help="runs per server per scenario (default 3; --quick 1)")
    parser.add_argument(
        "--only", help="comma-separated scenarios or kinds (echo, broadcast, idle, chat, echo-50)"
    )
    parser.add_argument("--servers", help=f"comma-separated servers (default all): {', '.join(SERVERS)}")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 2; --quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default 0.5)")
    parser.add_argument("--echo-clients", type=int_list, help="default 1,50,500; --quick 1,10,50")
    parser.add_argument(
        "--subscribers", type=int_list, help="broadcast sizes; default 100,1000; --quick 20,100"
    )
    parser.add_argument("--window", type=int, default=10, help="broadcast messages in flight (default 10)")
    parser.add_argument("--idle-connections", type=int_list, help="default 10000; --quick 500")
    parser.add_argument(
        "--idle-rounds",
        type=int,
        help="rounds for the idle scenario (default 1: RSS/conn barely moves between runs, and "
        "10,000 handshakes take 10-20 s per run)",
    )
    parser.add_argument("--idle-hold", type=float, help="seconds the idle connections are held (default 2)")
    parser.add_argument("--chat-clients", type=int, help="default 200; --quick 40; 0 skips chat")
    parser.add_argument("--chat-rooms", type=int, help="default 20; --quick 4")
    parser.add_argument("--chat-window", type=int, default=4, help="chat messages in flight per client")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and loadgen to separate cores"
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="start every server with this first cyclic-GC threshold (Python's default: 700)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json", help="results JSON")
    parser.add_argument("--chart", type=Path, default=BENCH / "results" / "performance.png", help="chart PNG")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "rounds": 1 if quick else 3,
        "duration": 1.0 if quick else 2.0,
        "warmup": 0.3 if quick else 0.5,
        "echo_clients": [1, 10, 50] if quick else [1, 50, 500],
        "subscribers": [20, 100] if quick else [100, 1000],
        "idle_connections": [500] if quick else [10_000],
        "idle_hold": 1.0 if quick else 2.0,
        "idle_rounds": 1,
        "chat_clients": 40 if quick else 200,
        "chat_rooms": 4 if quick else 20,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.servers:
        args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
        unknown = sorted(set(args.servers) - set(SERVERS))
        if unknown:
            parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    else:
        args.servers = list(SERVERS)
    return args


def select(scenarios: list[Scenario], only: str | None) -> list[Scenario]:
    if not only:
        return scenarios
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = [s for s in scenarios if s.name in wanted or s.kind in wanted]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no scenario; have: {', '.join(s.name for s in scenarios)}")
    return chosen


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM too: stop the running server, keep what finished


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    scenarios = select(build_scenarios(args), args.only)
    pinned = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    report: dict[str, Any] = {
        "environment": environment(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pinned": pinned,
        "scenarios": {},
    }
    summaries: dict[str, Any] = {}
    interrupted = False
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(
        f"bench: {len(scenarios)} scenarios x {args.rounds} rounds; servers {', '.join(args.servers)}; "
        f"{'pinned to separate cores' if pinned else 'not pinned'}",
        flush=True,
    )
    try:
        for scenario in scenarios:
            servers = [s for s in scenario.servers if s in args.servers]
            if not servers:
                continue
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            rounds = args.idle_rounds if scenario.kind == "idle" else args.rounds
            for round_no in range(rounds):
                for name in servers:  # alternate: A B C, A B C, ...
                    result = run_one(SERVERS[name], scenario, pinned=pinned, gc_threshold=args.gc_threshold)
                    runs[name].append(result)
                    value = result.get(scenario.metric)
                    status = f"{fmt(value)} {scenario.unit}" if result.get("ok") else "FAILED"
                    print(
                        f"  [{time.monotonic() - started:6.1f}s] {scenario.name:<16} round {round_no + 1}"
                        f" {name:<24} {status}",
                        flush=True,
                    )
            summaries[scenario.name] = summarize(scenario, runs)
            report["scenarios"][scenario.name] = {**summaries[scenario.name], "runs": runs}
            args.out.write_text(json.dumps(report, indent=2))  # keep what we have if interrupted
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: summarizing what finished", flush=True)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=2))
    for scenario in scenarios:
        if scenario.name in summaries:
            print_table(scenario, summaries[scenario.name])
    print(f"\nresults written to {args.out} ({report['elapsed_s']:.0f} s)")
    print(draw_chart(scenarios, summaries, args.chart, args.rounds, args.idle_rounds))
    if interrupted:
        return 130
    failed = any(e["ok_runs"] == 0 for s in summaries.values() for e in s["servers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
