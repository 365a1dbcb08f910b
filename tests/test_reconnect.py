"""Reconnecting clients: connect_with_retry() and run_reconnecting() against real and in-memory servers."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import ServeFn, echo_handler
from trionos import Position, chat
from trionos._backoff import Backoff
from trionos._reconnect import MAX_AHEAD, RETRY_CLOSE_CODES, Positions, connect_with_retry, run_reconnecting
from trionos.testing import open_cutting_proxy, open_memory_server


class Fixed:
    """A random source that always returns ``value``: full jitter then waits exactly the bound."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def exact(initial: float = 1.0, maximum: float = 30.0) -> Backoff:
    """A schedule whose delays are exactly initial, 2 * initial, 4 * initial, ... up to maximum."""
    return Backoff(initial=initial, maximum=maximum, random=Fixed(1.0))


def fast() -> Backoff:
    """A real-time schedule short enough for loopback tests."""
    return Backoff(initial=0.01, maximum=0.05)


def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the trionos.reconnect logger said."""
    return [r.getMessage() for r in caplog.records if r.name == "trionos.reconnect"]


def closing_with(*codes: int, started: list[float] | None = None) -> trionos._server.Handler:
    """A handler that closes the n-th connection with ``codes[n]`` (the last code repeats)."""
    count = 0

    async def handler(req: trionos.Request) -> None:
        nonlocal count
        ws = await req.accept()
        if started is not None:
            started.append(trio.current_time())
        code = codes[min(count, len(codes) - 1)]
        count += 1
        await ws.close(code, f"code {code}")

    return handler


async def read_until_closed(ws: trionos.WebSocket) -> None:
    """Read until the connection closes (raises ConnectionClosed)."""
    while True:
        await ws.recv()


class Refusing:
    """A connect function whose every attempt fails with ConnectionRejected(503); counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url: str, **options: Any) -> Any:
        self.calls += 1
        return self._fail()

    @asynccontextmanager
    async def _fail(self) -> AsyncIterator[trionos.WebSocket]:
        raise trionos.ConnectionRejected(503, b"busy")
        yield  # an async generator, for asynccontextmanager


# --- connect_with_retry ---------------------------------------------------------------------------


async def test_connect_with_retry_yields_a_connected_websocket(start_server: ServeFn) -> None:
    """With a server up, the first attempt yields an open WebSocket."""
    server = await start_server(echo_handler)
    async with connect_with_retry(server.url, 3) as ws:
        assert ws is not None
        await ws.send("hi")
        assert await ws.recv() == "Echo: hi"


async def test_connect_with_retry_gives_up_after_exactly_max_attempts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Against a closed port it tries max_attempts times, logs each failure, and yields None."""
    url = f"ws://127.0.0.1:{closed_port()}/"
    async with connect_with_retry(url, 4, backoff=exact()) as ws:
        assert ws is None
    said = messages(caplog)
    assert len(said) == 4
    assert all(m.startswith(f"connection to {url} failed (could not connect to 127.0.0.1:") for m in said)
    assert [m.rsplit(", ", 1)[1] for m in said] == [
        "retrying in 1 s",
        "retrying in 2 s",
        "retrying in 4 s",
        "giving up after 4 attempts",
    ]


async def test_connect_with_retry_waits_the_schedule_between_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Attempts are separated by the backoff delays and none follows the last attempt."""
    refusing = Refusing()
    start = trio.current_time()
    async with connect_with_retry("ws://x/", 3, initial_delay=1.0, backoff=exact(), connect=refusing) as ws:
        assert ws is None
    assert refusing.calls == 3
    assert trio.current_time() - start == 1.0 + 2.0


async def test_connect_with_retry_does_not_retry_the_block(start_server: ServeFn) -> None:
    """An exception from the block propagates unchanged and the connection is opened only once."""
    started: list[float] = []
    server = await start_server(closing_with(1000, started=started))
    with pytest.raises(trionos.HandshakeError, match="from the block"):
        async with connect_with_retry(server.url, 3) as ws:
            assert ws is not None
            raise trionos.HandshakeError("from the block")
    assert len(started) == 1


async def test_connect_with_retry_rejects_zero_attempts() -> None:
    """max_attempts must be at least 1."""
    with pytest.raises(ValueError, match="max_attempts must be a whole number of at least 1, got 0"):
        async with connect_with_retry("ws://127.0.0.1:1/", 0):
            pass  # pragma: no cover


async def test_connect_with_retry_takes_max_attempts_by_keyword(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_attempts=3 makes exactly three attempts."""
    refusing = Refusing()
    async with connect_with_retry("ws://x/", max_attempts=3, backoff=exact(), connect=refusing) as ws:
        assert ws is None
    assert refusing.calls == 3


async def test_the_deprecated_max_retries_keyword_still_counts_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_retries=2 warns (pointing at the caller) and still makes two attempts."""
    refusing = Refusing()
    with pytest.warns(trionos.TrionosDeprecationWarning, match="max_retries=.* use max_attempts") as record:
        retrying = connect_with_retry("ws://x/", max_retries=2, backoff=exact(), connect=refusing)
    assert record[0].filename == __file__
    async with retrying as ws:
        assert ws is None
    assert refusing.calls == 2


def test_connect_with_retry_needs_exactly_one_attempt_count() -> None:
    """Neither max_attempts nor max_retries, or both, is a TypeError."""
    with pytest.raises(TypeError, match="missing required argument: 'max_attempts'"):
        connect_with_retry("ws://x/")
    with pytest.raises(TypeError, match="takes max_attempts or max_retries, not both"):
        connect_with_retry("ws://x/", 2, max_retries=2)


# --- run_reconnecting over real sockets ---------------------------------------------------------


async def test_a_server_that_starts_late_is_reached(nursery: trio.Nursery) -> None:
    """The client keeps trying until the server comes up, then its handler runs."""
    port = closed_port()
    refused = trio.Event()
    done = trio.Event()
    result: list[int | None] = []

    @asynccontextmanager
    async def watching_connect(url: str, **options: Any) -> AsyncIterator[trionos.WebSocket]:
        try:
            async with trionos.connect(url, **options) as ws:
                yield ws
        except trionos.HandshakeError:
            refused.set()
            raise

    async def on_connect(ws: trionos.WebSocket) -> None:
        await ws.send("late")
        assert await ws.recv() == "Echo: late"

    async def client() -> None:
        url = f"ws://127.0.0.1:{port}/"
        result.append(await run_reconnecting(url, on_connect, backoff=fast(), connect=watching_connect))
        done.set()

    nursery.start_soon(client)
    await refused.wait()
    await nursery.start(functools.partial(trionos.serve, port, echo_handler, host="127.0.0.1"))
    await done.wait()
    assert result == [None]


async def test_a_restarted_server_is_reconnected_and_the_handler_runs_again(nursery: trio.Nursery) -> None:
    """Cancelling serve closes with 1001; the client reconnects to a new server on the same port."""
    greeted = [trio.Event(), trio.Event()]
    first_stopped = trio.Event()
    endings: list[int | None] = []
    received: list[str | bytes] = []
    result: list[int | None] = []
    done = trio.Event()

    def greeter(generation: int) -> trionos._server.Handler:
        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            await ws.send(f"hello from server {generation}")
            if generation == 2:
                await ws.close(1000, "done")
            else:
                await read_until_closed(ws)

        return handler

    first_scope = trio.CancelScope()

    async def first_server(task_status: trio.TaskStatus[trionos.Server]) -> None:
        with first_scope:
            await trionos.serve(0, greeter(1), host="127.0.0.1", task_status=task_status)
        first_stopped.set()

    async def on_connect(ws: trionos.WebSocket) -> None:
        async for message in ws:  # ends quietly on 1000 and 1001
            received.append(message)
            greeted[len(received) - 1].set()
        endings.append(ws.close_code)

    async def client(url: str) -> None:
        result.append(await run_reconnecting(url, on_connect, backoff=fast()))
        done.set()

    server = await nursery.start(first_server)
    nursery.start_soon(client, server.url)
    await greeted[0].wait()
    first_scope.cancel()
    await first_stopped.wait()
    await nursery.start(functools.partial(trionos.serve, server.port, greeter(2), host="127.0.0.1"))
    await done.wait()
    assert received == ["hello from server 1", "hello from server 2"]
    assert endings == [1001, 1000]
    assert result == [1000]


# --- run_reconnecting: which endings retry (in memory, virtual time) ----------------------------


async def test_normal_close_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    """A server closing with 1000 ends run_reconnecting, which returns 1000 after one connection."""
    started: list[float] = []
    async with open_memory_server(closing_with(1000, started=started), heartbeat=None) as memory:
        result = await run_reconnecting("/", read_until_closed, connect=memory.connect)
    assert result == 1000 and type(result) is int
    assert len(started) == 1


@pytest.mark.parametrize("code", [1008, 4000, 4999])
async def test_policy_close_is_not_retried(autojump_clock: trio.testing.MockClock, code: int) -> None:
    """A policy (1008) or application (4000-4999) close is returned, not retried."""
    started: list[float] = []
    async with open_memory_server(closing_with(code, started=started), heartbeat=None) as memory:
        assert await run_reconnecting("/", read_until_closed, connect=memory.connect) == code
    assert len(started) == 1


@pytest.mark.parametrize("code", sorted(RETRY_CLOSE_CODES - {1006}))
async def test_abnormal_close_is_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """1001, 1011, 1012 and 1013 reconnect after a delay, and the next connection runs."""
    started: list[float] = []
    async with open_memory_server(closing_with(code, 1000, started=started), heartbeat=None) as memory:
        result = await run_reconnecting("/", read_until_closed, backoff=exact(), connect=memory.connect)
    assert result == 1000
    assert started == [pytest.approx(0.0), pytest.approx(1.0)]
    assert messages(caplog)[0] == (
        f"connection to / closed (connection closed with code {code} (code {code})), retrying in 1 s"
    )


async def test_dropped_connection_is_retried(nursery: trio.Nursery) -> None:
    """A TCP connection that ends without a close frame (1006) reconnects."""
    count = 0

    async def raw_server(stream: trio.SocketStream) -> None:
        # Accept the upgrade by hand; drop TCP once the client speaks the first time, close with 1000 next.
        nonlocal count
        count += 1
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        if count == 1:
            await stream.receive_some(4096)  # the client's first message: it has seen the upgrade
        else:
            await stream.send_all(b"\x88\x02\x03\xe8")  # close frame, code 1000
            while await stream.receive_some(4096):
                pass
        await stream.aclose()

    endings: list[int | None] = []

    async def on_connect(ws: trionos.WebSocket) -> None:
        try:
            await ws.send("here")
            await read_until_closed(ws)
        finally:
            endings.append(ws.close_code)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, raw_server, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    assert await run_reconnecting(url, on_connect, backoff=fast(), heartbeat=None) == 1000
    assert endings == [1006, 1000]


async def test_retry_on_close_chooses_the_codes(autojump_clock: trio.testing.MockClock) -> None:
    """Codes listed in retry_on_close are retried, and a code left out is returned."""
    started: list[float] = []
    handler = closing_with(4000, 4001, 1011, started=started)
    async with open_memory_server(handler, heartbeat=None) as memory:
        result = await run_reconnecting(
            "/", read_until_closed, retry_on_close=range(4000, 4100), backoff=exact(), connect=memory.connect
        )
    assert result == 1011
    assert len(started) == 3


async def test_returning_on_an_open_connection_is_done(autojump_clock: trio.testing.MockClock) -> None:
    """on_connect returning normally stops: None is returned and the server sees a 1000 close."""
    seen: list[int] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        await ws.send("hello")
        try:
            await read_until_closed(ws)
        except trionos.ConnectionClosed as exc:
            seen.append(exc.code)

    async def on_connect(ws: trionos.WebSocket) -> None:
        assert await ws.recv() == "hello"

    async with open_memory_server(handler, heartbeat=None) as memory:
        assert await run_reconnecting("/", on_connect, connect=memory.connect) is None
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [1000]


async def test_an_error_in_on_connect_propagates_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Exceptions other than ConnectionClosed, even a HandshakeError, propagate from the first run."""
    calls = 0

    async def on_connect(ws: trionos.WebSocket) -> None:
        nonlocal calls
        calls += 1
        raise trionos.HandshakeError("raised by the application")

    async with open_memory_server(echo_handler, heartbeat=None) as memory:
        with pytest.raises(trionos.HandshakeError, match="raised by the application"):
            await run_reconnecting("/", on_connect, connect=memory.connect)
    assert calls == 1


async def test_closes_inside_an_exception_group_are_closes(autojump_clock: trio.testing.MockClock) -> None:
    """An on_connect whose nursery tasks all end with ConnectionClosed is treated as that close."""
    started: list[float] = []

    async def on_connect(ws: trionos.WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until_closed, ws)
            nursery.start_soon(read_until_closed, ws)

    async with open_memory_server(closing_with(1011, 4000, started=started), heartbeat=None) as memory:
        assert await run_reconnecting("/", on_connect, backoff=exact(), connect=memory.connect) == 4000
    assert len(started) == 2


async def test_a_group_with_other_errors_propagates(autojump_clock: trio.testing.MockClock) -> None:
    """A group holding anything besides ConnectionClosed is not a close: it propagates unretried."""
    started: list[float] = []

    async def fail_on_close(ws: trionos.WebSocket) -> None:
        # Shielded, so that the other task's ConnectionClosed cannot cancel it before it fails.
        with trio.CancelScope(shield=True), contextlib.suppress(trionos.ConnectionClosed):
            await read_until_closed(ws)
        raise KeyError("bug")

    async def on_connect(ws: trionos.WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until_closed, ws)
            nursery.start_soon(fail_on_close, ws)

    async with open_memory_server(closing_with(1011, started=started), heartbeat=None) as memory:
        with pytest.RaisesGroup(trionos.ConnectionClosed, KeyError, flatten_subgroups=True):
            await run_reconnecting("/", on_connect, connect=memory.connect)
    assert len(started) == 1


# --- run_reconnecting: schedule, bounds, cancellation ------------------------------------------


async def test_schedule_resets_after_a_stable_connection(autojump_clock: trio.testing.MockClock) -> None:
    """Delays double while connections fail fast; one that stayed up stable_after seconds resets them."""
    started: list[float] = []
    count = 0

    async def handler(req: trionos.Request) -> None:
        nonlocal count
        count += 1
        ws = await req.accept()
        started.append(trio.current_time())
        if count == 4:
            await trio.sleep(10)  # longer than stable_after
        await ws.close(1000 if count == 6 else 1011)

    async with open_memory_server(handler, heartbeat=None) as memory:
        result = await run_reconnecting(
            "/", read_until_closed, backoff=exact(), stable_after=5.0, connect=memory.connect
        )
    assert result == 1000
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    # 1, 2, 4 while failing; 10 s up, then the schedule starts again: 1, then 2.
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 10.0 + 1.0, 2.0])


async def test_max_attempts_raises_the_last_connect_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After max_attempts failed connects in a row the last error is raised with a note."""
    refusing = Refusing()
    start = trio.current_time()
    with pytest.raises(trionos.ConnectionRejected) as info:
        await run_reconnecting(
            "ws://x/", read_until_closed, max_attempts=3, backoff=exact(), connect=refusing
        )
    assert refusing.calls == 3
    assert trio.current_time() - start == 1.0 + 2.0
    assert info.value.__notes__ == ["run_reconnecting gave up after 3 attempts in a row to reach ws://x/"]
    assert messages(caplog)[-1].endswith("giving up after 3 attempts")


async def test_max_attempts_counts_connections_closed_with_a_retried_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connections that keep closing with 1011 exhaust max_attempts and raise that ConnectionClosed."""
    started: list[float] = []
    async with open_memory_server(closing_with(1011, started=started), heartbeat=None) as memory:
        with pytest.raises(trionos.ConnectionClosed) as info:
            await run_reconnecting("/", read_until_closed, max_attempts=2, connect=memory.connect)
    assert info.value.code == 1011
    assert len(started) == 2


async def test_cancelling_closes_the_connection_and_cancels_on_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling run_reconnecting cancels on_connect and the server sees a 1000 close."""
    connected = trio.Event()
    server_saw: list[int] = []
    on_connect_saw: list[str] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            await read_until_closed(ws)
        except trionos.ConnectionClosed as exc:
            server_saw.append(exc.code)

    async def on_connect(ws: trionos.WebSocket) -> None:
        connected.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            on_connect_saw.append("cancelled")
            raise

    async with open_memory_server(handler, heartbeat=None) as memory:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(run_reconnecting, "/", on_connect, connect=memory.connect))
            await connected.wait()
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
    assert on_connect_saw == ["cancelled"]
    assert server_saw == [1000]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be a whole number of at least 1, got 0"),
        ({"max_attempts": 1.5}, "max_attempts must be a whole number of at least 1, got 1.5"),
        ({"stable_after": -1.0}, "stable_after must be 0 or more seconds, got -1.0"),
    ],
)
async def test_invalid_options_are_rejected(options: dict[str, Any], message: str) -> None:
    """Bad max_attempts or stable_after raise ValueError before any attempt."""
    refusing = Refusing()
    with pytest.raises(ValueError) as info:
        await run_reconnecting("ws://x/", read_until_closed, connect=refusing, **options)
    assert str(info.value) == message
    assert refusing.calls == 0


def test_default_retry_codes() -> None:
    """By default only abnormal or transient closes retry; normal and policy closes do not."""
    assert frozenset({1001, 1006, 1011, 1012, 1013}) == RETRY_CLOSE_CODES
    assert not {1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000} & RETRY_CLOSE_CODES


# --- resuming a subscription: Positions and a connection cut mid-conversation ---------------------------


def test_positions_take_a_new_epoch_live_and_ask_to_recover_what_came_before() -> None:
    """A live message of another epoch is new (not a duplicate); a rejoin fills the new epoch's start."""
    positions = Positions()
    positions.welcome("r", Position("e", 0), None)
    assert positions.receive("r", 1, "e") and positions.receive("r", 2, "e")
    assert positions.recovery_due("r") is None
    assert positions.receive("r", 3, "f")  # the history restarted: offsets 1, 2 of "f" were missed
    assert positions.recovery_due("r") == Position("f", 0) and positions.recovery_due("r") is None
    assert positions.receive("r", 4, "f")
    positions.welcome("r", Position("f", 4), True)  # the rejoin: 1 and 2 replayed, 3, 4 shown already
    assert [positions.receive("r", n, "f") for n in (1, 2, 3, 4, 5)] == [True, True, False, False, True]
    assert positions.since("r") == Position("f", 5) and positions.recovery_due("r") is None


def test_positions_notice_a_skipped_live_offset_but_not_their_own_messages() -> None:
    """A jump in live offsets is a gap to recover; an acknowledged own message is not."""
    positions = Positions()
    positions.welcome("r", Position("e", 0), None)
    assert positions.receive("r", 1, "e")
    positions.own("r", 2)
    assert positions.receive("r", 3, "e") and positions.recovery_due("r") is None
    assert positions.receive("r", 5, "e")  # 4 never came (a dropped subscription)
    assert positions.since("r") == Position("e", 3) and positions.recovery_due("r") == Position("e", 3)
    positions.welcome("r", Position("e", 6), True)
    assert [positions.receive("r", n, "e") for n in (4, 5, 6, 7)] == [True, False, True, True]
    assert positions.since("r") == Position("e", 7)


def test_positions_keep_at_most_max_ahead_offsets_beyond_a_gap() -> None:
    """A gap that is never filled is given up after MAX_AHEAD offsets beyond it."""
    positions = Positions()
    positions.welcome("r", Position("e", 0), None)
    for offset in range(2, MAX_AHEAD + 3):
        assert positions.receive("r", offset, "e")
    assert positions.since("r") == Position("e", MAX_AHEAD + 2)


async def test_a_live_client_sees_the_epoch_change_of_an_evicted_room_and_recovers(
    nursery: trio.Nursery,
) -> None:
    """Memory broker: a room evicted while its member listens restarts at offset 1; nothing is dropped."""
    bounds = trionos.HistoryBounds(max_rooms=1)
    hub = await nursery.start(trionos.Hub(codec=chat.SERVER_CODEC, history=bounds, epoch_field="epoch").run)
    positions = Positions()
    shown: list[str] = []
    rejoins: list[Position] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws, identity="ann") as client:
            async for raw in ws:
                join = chat.CLIENT_CODEC.decode(raw)
                assert isinstance(join, chat.Join)

                def welcome(recovery: trionos.Recovery, since: Position | None = join.since) -> chat.Welcome:
                    recovered = None if since is None else recovery.complete
                    return chat.Welcome(["ann"], recovery.position.epoch, recovery.position.offset, recovered)

                await hub.join_with_history(client, "a", since=join.since, welcome=welcome)

    async with open_memory_server(handler, heartbeat=None) as server, server.connect("/") as ws:
        await ws.send_message(chat.Join("ann", "a"), chat.CLIENT_CODEC)
        async for raw in ws:
            message = chat.SERVER_CODEC.decode(raw)
            if isinstance(message, chat.Welcome):
                assert message.epoch is not None and message.offset is not None
                positions.welcome("a", Position(message.epoch, message.offset), message.recovered)
                if message.recovered is None:
                    await hub.broadcast("a", chat.Message("bob", "1"))
                    await hub.broadcast("b", chat.Message("bob", "elsewhere"))  # evicts room a
                    await hub.broadcast("a", chat.Message("bob", "2"))  # a new epoch, offset 1
                    await hub.broadcast("a", chat.Message("bob", "3"))
            elif isinstance(message, chat.Message):
                assert message.offset is not None
                if positions.receive("a", message.offset, message.epoch):
                    shown.append(message.text)
                if (since := positions.recovery_due("a")) is not None:
                    rejoins.append(since)
                    await ws.send_message(chat.Join("ann", "a", since=since), chat.CLIENT_CODEC)
                if len(shown) == 3:
                    break
    assert shown == ["1", "2", "3"] and rejoins == []
    assert hub.metrics.history_rooms_dropped == 2  # a by b, then b by a


def test_positions_track_the_last_offset_and_drop_duplicates() -> None:
    """Positions follow welcomes and messages; an offset already seen is reported as a duplicate."""
    positions = Positions()
    assert positions.since("r") is None and positions.receive("r", 1)
    positions.welcome("r", Position("e", 4), None)
    assert positions.since("r") == Position("e", 4)
    assert not positions.receive("r", 4)
    assert positions.receive("r", 5) and positions.since("r") == Position("e", 5)
    positions.welcome("r", Position("e", 9), True)  # recovered: 6..9 follow
    assert positions.since("r") == Position("e", 5) and positions.receive("r", 6)
    positions.welcome("r", Position("f", 2), False)  # new epoch: take all that follows
    assert positions.since("r") == Position("f", 0) and positions.receive("r", 1)
    positions.forget("r")
    assert positions.since("r") is None


async def test_a_client_cut_mid_conversation_resumes_with_every_message_exactly_once(
    nursery: trio.Nursery, start_server: ServeFn
) -> None:
    """run_reconnecting + Positions through a cutting proxy: all messages arrive once, in order."""
    hub = await nursery.start(trionos.Hub(codec=chat.SERVER_CODEC, history=True).run)

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws, identity="ann") as client:
            join = chat.CLIENT_CODEC.decode(await ws.recv())
            assert isinstance(join, chat.Join)

            def welcome(recovery: trionos.Recovery) -> chat.Welcome:
                recovered = None if join.since is None else recovery.complete
                return chat.Welcome(["ann"], recovery.position.epoch, recovery.position.offset, recovered)

            await hub.join_with_history(client, join.room, since=join.since, welcome=welcome)
            async for _ in ws:
                pass

    server = await start_server(handler)
    received: list[str] = []
    welcomes: list[bool | None] = []
    positions = Positions()
    all_in = trio.Event()
    welcomed = trio.Event()

    async def on_connect(ws: trionos.WebSocket) -> None:
        await ws.send_message(chat.Join("ann", "r", since=positions.since("r")), chat.CLIENT_CODEC)
        async for raw in ws:
            message = chat.SERVER_CODEC.decode(raw)
            if isinstance(message, chat.Welcome):
                assert message.epoch is not None and message.offset is not None
                positions.welcome("r", Position(message.epoch, message.offset), message.recovered)
                welcomes.append(message.recovered)
                welcomed.set()
            elif isinstance(message, chat.Message):
                assert message.offset is not None
                if positions.receive("r", message.offset):
                    received.append(message.text)
                if len(received) == 10:
                    all_in.set()
                    return

    async with open_cutting_proxy(server.port) as proxy:
        async with trio.open_nursery() as clients:
            clients.start_soon(
                functools.partial(run_reconnecting, f"{proxy.url}/", on_connect, backoff=fast())
            )
            await welcomed.wait()  # a client has a position once it was welcomed
            for i in range(1, 6):
                await hub.broadcast("r", chat.Message("bob", str(i)))
            assert proxy.cut() == 1
            for i in range(6, 11):  # while the client is away
                await hub.broadcast("r", chat.Message("bob", str(i)))
            await all_in.wait()
    assert received == [str(i) for i in range(1, 11)]
    assert welcomes[0] is None and welcomes[-1] is True
    assert proxy.connections >= 2
