"""The load generator: one process, the same for every server, as fast as Python gets.

It runs on asyncio with uvloop (when installed) and picows, whose ``on_ws_frame`` callback lets
a reply trigger the next send without a task switch, so the load generator stays cheaper than
the servers it measures. All clients live in this one process and share one
``time.perf_counter_ns`` clock, so a timestamp written by the publisher can be compared with the
receive time at each subscriber.

Usage::

    python bench/loadgen.py SCENARIO --url ws://127.0.0.1:PORT [options] [--json]

Scenarios (see bench/README.md for what each measures):

- ``echo``       N clients in a closed loop on ``/echo``: send, wait for the reply, repeat.
- ``raw-echo``   the same loop over plain TCP with newline framing (``tcp://`` or ``ws://`` URL).
- ``broadcast``  S subscribers on ``/subscribe``, one publisher on ``/publish`` keeping at most
                 ``--window`` messages in flight; deliveries/s and latency.
- ``idle``       N connections on ``/subscribe`` held open; the server's RSS per connection
                 (``--server-pid``), then the time one broadcast takes to reach all N.
- ``chat``       C clients in R rooms speaking the room-chat JSON protocol; deliveries/s.

Every wait has a timeout and every loop is bounded by ``--duration``; ``--timeout`` caps the
whole run. Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_connect

# The fd-limit helper the bench servers use; 10,000 idle connections need it here too.
sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))
from _common import raise_nofile_limit

perf_ns = time.perf_counter_ns
TEXT = WSMsgType.TEXT

#: Default path per scenario when the URL names none.
DEFAULT_PATHS = {"echo": "/echo", "broadcast": "/subscribe", "idle": "/subscribe", "chat": "/"}

#: Seconds with no completed delivery after which the oldest in-flight message counts as lost
#: (a server that drops messages for slow subscribers must not stall the load generator).
STALL_S = 2.0


class LoadError(Exception):
    """The run could not be carried out as asked (connect failures, server silent...)."""


# --------------------------------------------------------------------------------------------
# helpers


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise SystemExit(f"loadgen only targets loopback addresses, got {host!r} in {url!r}")


def with_path(url: str, path: str) -> str:
    """Return ``url`` with its path replaced by ``path``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def default_path(url: str, scenario: str) -> str:
    path = urlsplit(url).path
    return path if path not in ("", "/") or scenario == "chat" else DEFAULT_PATHS[scenario]


def percentiles(samples_ns: array, *qs: float) -> list[float | None]:
    """Return the ``qs`` quantiles of ``samples_ns`` in milliseconds (nearest rank)."""
    if not samples_ns:
        return [None for _ in qs]
    ordered = sorted(samples_ns)
    last = len(ordered) - 1
    return [round(ordered[min(last, int(q * len(ordered)))] / 1e6, 3) for q in qs]


def read_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LoadError(f"no VmRSS line in /proc/{pid}/status")


def read_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of this process and of the server (when its pid is known) over the measured window.

    Either near 100 % says who the bottleneck was: a loadgen at 100 % means the figure is a floor.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.wall = time.monotonic()
        self.own = time.process_time()
        self.server = self._server_cpu()

    def _server_cpu(self) -> float | None:
        if not self.server_pid:
            return None
        try:
            return read_cpu_s(self.server_pid)
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> dict[str, float | None]:
        """Return CPU % of both processes since creation, and the server's CPU seconds."""
        wall = time.monotonic() - self.wall
        server = self._server_cpu()
        server_s = server - self.server if server is not None and self.server is not None else None
        return {
            "loadgen_cpu_pct": round(100 * (time.process_time() - self.own) / wall, 1),
            "server_cpu_pct": round(100 * server_s / wall, 1) if server_s is not None else None,
            "server_cpu_s": server_s,
        }


def per_message(cpu: dict[str, float | None], count: int) -> float | None:
    """Server CPU microseconds per message: unlike a rate, other load on the machine barely moves it.

    /proc counts CPU time in clock ticks (10 ms), so this needs a few seconds of measurement.
    """
    server_s = cpu.get("server_cpu_s")
    return round(1e6 * server_s / count, 2) if server_s is not None and count else None


async def wait_until(predicate: Callable[[], bool], within: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass; return whether it held."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


@dataclasses.dataclass
class Window:
    """What one measured window gave: its length, the CPU use of each watched process (as
    :meth:`CpuMeter.stop` reports it), and the messages sent and lost while it ran."""

    seconds: float
    cpu: list[dict[str, float | None]]
    sent: int
    lost: int


async def measure_window(
    run: Any,
    args: argparse.Namespace,
    pids: Sequence[int],
    *,
    unstall: Callable[[], None],
    drained: Callable[[], bool],
) -> Window:
    """Load ``args.warmup`` seconds unmeasured, then measure ``args.duration`` seconds.

    ``run`` is a fan-out or chat run: ``run.recording`` is on only while measuring, and
    ``run.running`` is turned off afterwards, when what is in flight gets up to 3 s to drain
    (``drained``). A watchdog calls ``unstall`` every 0.25 s throughout.
    """

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(0.25)
            unstall()

    guard = asyncio.ensure_future(watchdog())
    try:
        await asyncio.sleep(args.warmup)
        sent_before, lost_before = run.sent, run.lost
        meters = [CpuMeter(pid) for pid in pids]
        run.recording = True
        started = perf_ns()
        await asyncio.sleep(args.duration)
        run.recording = False
        seconds = (perf_ns() - started) / 1e9
        cpu = [meter.stop() for meter in meters]
        sent, lost = run.sent - sent_before, run.lost - lost_before
        run.running = False
        await wait_until(drained, 3.0)
    finally:
        guard.cancel()
    return Window(seconds, cpu, sent, lost)


async def connect_many(
    url: str,
    factories: Sequence[Callable[[], WSListener]],
    *,
    concurrency: int,
    handshake_s: float,
    read_buffer: int = 4096,
) -> tuple[list[WSListener], list[str]]:
    """Open one connection per factory, at most ``concurrency`` handshakes at a time.

    Each connection is tried three times. Return the listeners (in factory order) and the
    distinct error messages of attempts that failed before one succeeded. A connection that fails
    all three times fails the run (LoadError, after closing the others): a figure measured over
    fewer connections than asked for (a server refusing some, say with a per-address limit) would
    be silently wrong.
    """
    gate = asyncio.Semaphore(concurrency)
    errors: dict[str, int] = {}

    async def one(factory: Callable[[], WSListener]) -> WSListener | None:
        async with gate:
            for attempt in range(3):
                try:
                    _, listener = await ws_connect(
                        factory,
                        url,
                        websocket_handshake_timeout=handshake_s,
                        read_buffer_init_size=read_buffer,
                    )
                    return listener
                except Exception as exc:  # isolation boundary: one failed connection is counted
                    key = f"{type(exc).__name__}: {exc}"[:200]
                    errors[key] = errors.get(key, 0) + 1
                    if attempt < 2:
                        await asyncio.sleep(0.05 * (attempt + 1))
            return None

    results = await asyncio.gather(*(one(f) for f in factories))
    opened = [r for r in results if r is not None]
    messages = [f"{n} x {msg}" for msg, n in errors.items()]
    if len(opened) < len(results):
        disconnect_all(opened)
        raise LoadError(f"only {len(opened)} of {len(results)} connections to {url} opened: {messages}")
    return opened, messages


def disconnect_all(listeners: Sequence[Any]) -> None:
    """Close every connection with 1000 (picows' default close code, 0, is invalid on the wire)."""
    for listener in listeners:
        transport = getattr(listener, "transport", None)
        if transport is not None:
            try:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect(graceful=True)
            except Exception:
                pass


class Base(WSListener):
    transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport


# --------------------------------------------------------------------------------------------
# echo


class EchoRun:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.running = False
        self.recording = False
        self.count = 0
        self.errors = 0
        self.outstanding = 0
        self.latencies = array("q")


class EchoClient(Base):
    def __init__(self, run: EchoRun) -> None:
        self.run = run
        self.sent_at = 0

    def kick(self) -> None:
        run = self.run
        run.outstanding += 1
        self.sent_at = perf_ns()
        self.transport.send(TEXT, run.payload)

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type != TEXT:
            return
        now = perf_ns()
        run = self.run
        run.outstanding -= 1
        if frame.payload_size != len(run.payload):
            run.errors += 1
        if run.recording:
            run.count += 1
            run.latencies.append(now - self.sent_at)
        if run.running:
            run.outstanding += 1
            self.sent_at = now
            transport.send(TEXT, run.payload)


async def scenario_echo(args: argparse.Namespace) -> dict[str, Any]:
    run = EchoRun(b"x" * args.size)
    url = with_path(args.url, default_path(args.url, "echo"))
    clients, errors = await connect_many(
        url, [lambda: EchoClient(run)] * args.clients, concurrency=args.connect_concurrency, handshake_s=30
    )
    if not clients:
        raise LoadError(f"no client could connect to {url}: {errors}")
    try:
        return await closed_loop(run, clients, args, errors)
    finally:
        disconnect_all(clients)


async def closed_loop(run: Any, clients: Sequence[Any], args: argparse.Namespace, errors: list[str]) -> dict:
    run.running = True
    for client in clients:
        client.kick()
    await asyncio.sleep(args.warmup)
    run.recording = True
    started, meter = perf_ns(), CpuMeter(args.server_pid)
    await asyncio.sleep(args.duration)
    run.recording = False
    elapsed, cpu = (perf_ns() - started) / 1e9, meter.stop()
    run.running = False
    await wait_until(lambda: run.outstanding <= 0, 2.0)
    p50, p99 = percentiles(run.latencies, 0.50, 0.99)
    return {
        "clients": len(clients),
        "connect_errors": errors,
        "seconds": round(elapsed, 3),
        **cpu,
        "messages": run.count,
        "msgs_per_s": round(run.count / elapsed, 1),
        "server_us_per_msg": per_message(cpu, run.count),
        "p50_ms": p50,
        "p99_ms": p99,
        "bad_replies": run.errors,
    }


# --------------------------------------------------------------------------------------------
# raw-echo


class RawEchoClient(asyncio.Protocol):
    def __init__(self, run: EchoRun) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.sent_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def kick(self) -> None:
        self.run.outstanding += 1
        self.sent_at = perf_ns()
        self.transport.write(self.run.payload)

    def data_received(self, data: bytes) -> None:
        now = perf_ns()
        run = self.run
        data = self.pending + data
        lines = data.count(b"\n")
        self.pending = data[data.rfind(b"\n") + 1 :]
        for _ in range(lines):
            run.outstanding -= 1
            if run.recording:
                run.count += 1
                run.latencies.append(now - self.sent_at)
            if run.running:
                run.outstanding += 1
                self.sent_at = now
                self.transport.write(run.payload)


async def scenario_raw_echo(args: argparse.Namespace) -> dict[str, Any]:
    run = EchoRun(b"x" * (args.size - 1) + b"\n")
    parts = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.connect_concurrency)

    async def one() -> RawEchoClient:
        async with gate:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: RawEchoClient(run), parts.hostname, parts.port), 30
            )
            return protocol

    results = await asyncio.gather(*(one() for _ in range(args.clients)), return_exceptions=True)
    clients = [r for r in results if isinstance(r, RawEchoClient)]
    errors = sorted({f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)})
    if not clients:
        raise LoadError(f"no client could connect to {args.url}: {errors}")
    try:
        return await closed_loop(run, clients, args, errors)
    finally:
        for client in clients:
            client.transport.close()


# --------------------------------------------------------------------------------------------
# broadcast and idle: a publisher and many subscribers
#
# A message is "SSSSSSSSSS TTTTTTTTTTTTTTTTTTTT xxx": a 10-digit sequence number (negative for
# the sync messages that prove every subscriber is registered) and the perf_counter_ns at send.


def fanout_message(seq: int, size: int) -> bytes:
    head = b"%010d %020d " % (seq, perf_ns())
    return head + b"x" * max(0, size - len(head))


class FanoutRun:
    def __init__(self, subscribers: int, window: int, size: int) -> None:
        self.subscribers = subscribers
        self.window = window
        self.size = size
        self.publisher: WSTransport | None = None
        self.synced = 0
        self.sync_id = 0  # sync message k carries seq -k
        self.sync_receipts = 0  # receipts of the latest sync message
        self.last_sync_receipt = 0.0
        self.running = False
        self.recording = False
        self.delivered = 0
        self.latencies = array("q")
        self.pending: dict[int, int] = {}  # seq -> deliveries so far, while incomplete
        self.next_seq = 0
        self.sent = 0
        self.lost = 0
        self.last_progress = time.monotonic()
        self.first_seen: dict[int, int] = {}  # seq -> receive time of its last delivery

    def publish(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.pending[seq] = 0
        self.sent += 1
        self.publisher.send(TEXT, fanout_message(seq, self.size))

    def publish_sync(self) -> None:
        self.publisher.send(TEXT, fanout_message(-self.sync_id, self.size))

    def complete(self, seq: int, now: int) -> None:
        del self.pending[seq]
        self.last_progress = time.monotonic()
        self.first_seen[seq] = now
        if self.running:
            self.publish()

    def unstall(self) -> None:
        """Count the oldest in-flight message as lost if nothing completed for STALL_S seconds."""
        if self.pending and time.monotonic() - self.last_progress > STALL_S:
            oldest = min(self.pending)
            del self.pending[oldest]
            self.lost += 1
            self.last_progress = time.monotonic()
            if self.running:
                self.publish()


#: Latency is recorded at this many subscribers, spread evenly over the connection order; the
#: others only count, which keeps the load generator cheap at 1,000 subscribers.
LATENCY_SAMPLE = 64


class Subscriber(Base):
    def __init__(self, run: FanoutRun, sampled: bool) -> None:
        self.run = run
        self.sampled = sampled
        self.synced = False

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type != TEXT:
            return
        now = perf_ns()
        head = frame.get_payload_as_ascii_text()
        seq = int(head[:10])
        run = self.run
        if seq < 0:
            if seq == -run.sync_id:
                run.sync_receipts += 1
                run.last_sync_receipt = time.monotonic()
            if not self.synced:
                self.synced = True
                run.synced += 1
            return
        if run.recording:
            run.delivered += 1
            if self.sampled:
                run.latencies.append(now - int(head[11:31]))
        count = run.pending.get(seq)
        if count is None:
            return  # counted as lost already
        count += 1
        if count >= run.subscribers:
            run.complete(seq, now)
        else:
            run.pending[seq] = count


class Publisher(Base):
    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        pass


async def open_fanout(args: argparse.Namespace, count: int, run: FanoutRun) -> tuple[list, list, list]:
    """Connect the publisher then ``count`` subscribers; return (publisher, subscribers, errors)."""
    base = args.url
    sub_url = with_path(base, default_path(base, "broadcast"))
    pub_url = with_path(base, args.publish_path)
    publishers, errors = await connect_many(pub_url, [Publisher], concurrency=1, handshake_s=30)
    run.publisher = publishers[0].transport
    try:
        subscribers, sub_errors = await connect_many(
            sub_url,
            [
                functools.partial(Subscriber, run, i % max(1, count // LATENCY_SAMPLE) == 0)
                for i in range(count)
            ],
            concurrency=args.connect_concurrency,
            handshake_s=60,
            read_buffer=1024 if count > 2000 else 4096,
        )
    except LoadError:
        disconnect_all(publishers)
        raise
    run.subscribers = len(subscribers)
    return publishers, subscribers, errors + sub_errors


async def sync_subscribers(run: FanoutRun, within: float) -> float:
    """Publish sync messages until every subscriber got one, proving it is registered.

    A new sync message goes out only once the previous one has reached someone and then stopped
    arriving for 0.5 s (or reached no one in 5 s), so a server that is slow to fan out to
    thousands of connections is not flooded with a backlog of broadcasts that would distort what
    comes next; and the function returns only once the last one reached everyone. Return the
    seconds it took; raise LoadError after ``within`` seconds.
    """
    started = time.monotonic()
    deadline = started + within
    while run.synced < run.subscribers:
        if time.monotonic() > deadline:
            raise LoadError(
                f"only {run.synced} of {run.subscribers} subscribers received a broadcast "
                f"within {within:.0f} s"
            )
        run.sync_id += 1
        run.sync_receipts = 0
        run.publish_sync()
        sent = time.monotonic()
        while run.synced < run.subscribers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            if run.sync_receipts == 0 and now - sent > 5.0:
                break
            if run.sync_receipts > 0 and now - run.last_sync_receipt > 0.5:
                break
    # Everyone is registered, so the latest sync message reaches everyone: wait for it, so that
    # its fan-out is over before anything is measured.
    await wait_until(lambda: run.sync_receipts >= run.subscribers, max(1.0, deadline - time.monotonic()))
    return time.monotonic() - started


async def scenario_broadcast(args: argparse.Namespace) -> dict[str, Any]:
    run = FanoutRun(args.subscribers, args.window, args.size)
    publishers, subscribers, errors = await open_fanout(args, args.subscribers, run)
    try:
        sync_s = await sync_subscribers(run, args.sync_timeout)
        run.running = True
        for _ in range(run.window):
            run.publish()
        window = await measure_window(
            run, args, [args.server_pid], unstall=run.unstall, drained=lambda: not run.pending
        )
        elapsed, (cpu,), sent, lost = window.seconds, window.cpu, window.sent, window.lost
        p50, p99 = percentiles(run.latencies, 0.50, 0.99)
        return {
            "subscribers": run.subscribers,
            "window": run.window,
            "connect_errors": errors,
            "sync_s": round(sync_s, 3),
            "seconds": round(elapsed, 3),
            **cpu,
            "published": sent,
            "deliveries": run.delivered,
            "deliveries_per_s": round(run.delivered / elapsed, 1),
            "server_us_per_delivery": per_message(cpu, run.delivered),
            "messages_per_s": round(sent / elapsed, 1),
            "p50_ms": p50,
            "p99_ms": p99,
            "lost": lost,
        }
    finally:
        disconnect_all(subscribers + publishers)


async def scenario_idle(args: argparse.Namespace) -> dict[str, Any]:
    if not args.server_pid:
        raise LoadError("the idle scenario needs --server-pid to read the server's RSS")
    run = FanoutRun(args.clients, 1, args.size)
    rss_start = read_rss_kib(args.server_pid)
    started = time.monotonic()
    publishers, subscribers, errors = await open_fanout(args, args.clients, run)
    try:
        connect_s = time.monotonic() - started
        sync_s = await sync_subscribers(run, args.sync_timeout)
        # Hold the connections: RSS settles and the server's idle CPU is measured meanwhile.
        await asyncio.sleep(0.5)
        cpu_before = read_cpu_s(args.server_pid)
        await asyncio.sleep(args.duration)
        cpu_idle = (read_cpu_s(args.server_pid) - cpu_before) / args.duration
        rss_held = read_rss_kib(args.server_pid)
        # One timed broadcast: how long until all N have it.
        run.pending[0] = 0
        run.next_seq = 1
        sent_at = perf_ns()
        run.publisher.send(TEXT, fanout_message(0, args.size))
        reached = await wait_until(lambda: 0 not in run.pending, args.sync_timeout, step=0.001)
        received = run.subscribers if reached else run.pending.get(0, 0)
        fanout_ms = (run.first_seen[0] - sent_at) / 1e6 if reached else None
        return {
            "connections": run.subscribers,
            "connect_errors": errors,
            "connect_s": round(connect_s, 3),
            "sync_s": round(sync_s, 3),
            "sync_messages": run.sync_id,
            "rss_start_kib": rss_start,
            "rss_held_kib": rss_held,
            "kib_per_conn": round((rss_held - rss_start) / run.subscribers, 2),
            "idle_cpu_pct": round(100 * cpu_idle, 2),
            "fanout_received": received,
            "fanout_ms": round(fanout_ms, 2) if fanout_ms is not None else None,
        }
    finally:
        disconnect_all(subscribers + publishers)


# --------------------------------------------------------------------------------------------
# chat
#
# A chat text is "<sender index> <seq> <perf_counter_ns>". Each client keeps at most --window of
# its own messages in flight; a message is complete once every other member of its room has it.


class ChatRun:
    def __init__(self, window: int, pad: str) -> None:
        self.window = window
        self.pad = pad
        self.clients: list[ChatClient] = []
        self.room_size: dict[str, int] = {}
        self.welcomed = 0
        self.running = False
        self.recording = False
        self.delivered = 0
        self.sent = 0
        self.lost = 0
        self.unexpected = 0
        self.latencies = array("q")


class ChatClient(Base):
    def __init__(self, run: ChatRun, index: int, room: str) -> None:
        self.run = run
        self.index = index
        self.room = room
        self.username = f"u{index}"
        self.welcomed = False
        self.next_seq = 0
        self.pending: dict[int, int] = {}
        self.last_progress = time.monotonic()

    def send_json(self, obj: dict[str, Any]) -> None:
        self.transport.send(TEXT, json.dumps(obj, separators=(",", ":")).encode())

    def chat(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.pending[seq] = 0
        self.run.sent += 1
        self.send_json({"type": "chat", "text": f"{self.index} {seq} {perf_ns()}{self.run.pad}"})

    def complete(self, seq: int) -> None:
        del self.pending[seq]
        self.last_progress = time.monotonic()
        if self.run.running:
            self.chat()

    def unstall(self) -> None:
        if self.pending and time.monotonic() - self.last_progress > STALL_S:
            del self.pending[min(self.pending)]
            self.run.lost += 1
            self.last_progress = time.monotonic()
            if self.run.running:
                self.chat()

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type != TEXT:
            return
        now = perf_ns()
        run = self.run
        message = json.loads(frame.get_payload_as_bytes())
        kind = message.get("type")
        if kind == "message":
            sender, seq, sent_at = message["text"].split(" ", 3)[:3]
            if run.recording:
                run.delivered += 1
                run.latencies.append(now - int(sent_at))
            owner = run.clients[int(sender)]
            count = owner.pending.get(int(seq))
            if count is None:
                return
            count += 1
            if count >= run.room_size[owner.room] - 1:
                owner.complete(int(seq))
            else:
                owner.pending[int(seq)] = count
        elif kind == "welcome":
            if not self.welcomed:
                self.welcomed = True
                run.welcomed += 1
        elif kind not in ("joined", "left"):
            run.unexpected += 1


async def scenario_chat(args: argparse.Namespace) -> dict[str, Any]:
    rooms = max(1, args.rooms)
    if args.clients < 2 * rooms:
        raise LoadError(f"chat needs at least 2 clients per room: {args.clients} clients, {rooms} rooms")
    run = ChatRun(args.window, " " + "x" * max(0, args.size - 40))
    url = with_path(args.url, default_path(args.url, "chat"))

    def factory(index: int) -> Callable[[], ChatClient]:
        return lambda: ChatClient(run, index, f"r{index % rooms}")

    clients, errors = await connect_many(
        url, [factory(i) for i in range(args.clients)], concurrency=args.connect_concurrency, handshake_s=30
    )
    run.clients = sorted(clients, key=lambda c: c.index)
    try:
        for client in run.clients:
            run.room_size[client.room] = run.room_size.get(client.room, 0) + 1
        for client in run.clients:
            client.send_json({"type": "join", "username": client.username, "room": client.room})
        if not await wait_until(lambda: run.welcomed >= len(run.clients), args.sync_timeout):
            raise LoadError(f"only {run.welcomed} of {len(run.clients)} chat clients got a welcome")
        await asyncio.sleep(0.2)  # let the "joined" notices drain before counting
        run.running = True
        for client in run.clients:
            for _ in range(run.window):
                client.chat()

        def unstall() -> None:
            for client in run.clients:
                client.unstall()

        window = await measure_window(
            run,
            args,
            [args.server_pid],
            unstall=unstall,
            drained=lambda: not any(c.pending for c in run.clients),
        )
        elapsed, (cpu,), sent, lost = window.seconds, window.cpu, window.sent, window.lost
        p50, p99 = percentiles(run.latencies, 0.50, 0.99)
        return {
            "clients": len(run.clients),
            "rooms": rooms,
            "window": run.window,
            "connect_errors": errors,
            "seconds": round(elapsed, 3),
            **cpu,
            "chats_sent": sent,
            "deliveries": run.delivered,
            "deliveries_per_s": round(run.delivered / elapsed, 1),
            "server_us_per_delivery": per_message(cpu, run.delivered),
            "chats_per_s": round(sent / elapsed, 1),
            "p50_ms": p50,
            "p99_ms": p99,
            "lost": lost,
            "unexpected_messages": run.unexpected,
        }
    finally:
        disconnect_all(run.clients)


# --------------------------------------------------------------------------------------------

SCENARIOS = {
    "echo": scenario_echo,
    "raw-echo": scenario_raw_echo,
    "broadcast": scenario_broadcast,
    "idle": scenario_idle,
    "chat": scenario_chat,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WebSocket load generator for the trionos benchmarks (loopback only).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT[/path] (tcp:// for raw-echo)")
    parser.add_argument(
        "--clients", type=int, default=50, help="echo/raw-echo/chat clients; idle connections"
    )
    parser.add_argument("--subscribers", type=int, default=100, help="broadcast subscribers")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured (idle: seconds held)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of load before measuring")
    parser.add_argument("--window", type=int, default=None, help="messages in flight (broadcast 10, chat 2)")
    parser.add_argument("--rooms", type=int, default=10, help="chat rooms")
    parser.add_argument("--size", type=int, default=64, help="approximate message size in bytes")
    parser.add_argument("--publish-path", default="/publish", help="publisher path (broadcast, idle)")
    parser.add_argument("--server-pid", type=int, default=0, help="server pid, for RSS and CPU (idle)")
    parser.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight")
    parser.add_argument("--sync-timeout", type=float, default=60.0, help="seconds to wait for registration")
    parser.add_argument(
        "--timeout", type=float, default=None, help="cap on the whole run (default 120+duration)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.window is None:
        args.window = 2 if args.scenario == "chat" else 10
    if args.timeout is None:
        args.timeout = 120.0 + args.duration + args.warmup
    if args.scenario in ("echo", "raw-echo", "idle", "chat") and args.clients < 1:
        parser.error("--clients must be at least 1")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"scenario": args.scenario, "url": args.url}
    try:
        result.update(await asyncio.wait_for(SCENARIOS[args.scenario](args), args.timeout))
        result["ok"] = True
    except (LoadError, TimeoutError, OSError) as exc:
        result["ok"] = False
        kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        result["error"] = f"{kind}: {exc}" if str(exc) else kind
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_loopback(args.url)
    raise_nofile_limit()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
        result["loop"] = "asyncio"
    else:
        result = uvloop.run(run(args))
        result["loop"] = "uvloop"
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
