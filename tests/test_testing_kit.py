"""The test kit itself: bounded pipes, both backends, expectations, fault injectors, programs, plugin."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest.mock import ANY

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import trionos
import trionos.testing
from trionos.chat import SERVER_CODEC, Joined, Welcome
from trionos.testing import (
    AppStateMachine,
    Connect,
    Disconnect,
    MemoryServer,
    Send,
    disconnect_mid_frame,
    expect_closed,
    expect_message,
    expect_silence,
    half_open_peer,
    memory_pipe,
    open_app,
    open_memory_server,
    open_raw_peer,
    programs,
    run_program,
    slow_consumer,
)

pytest_plugins = ["pytester"]

NO_HEARTBEAT: dict[str, Any] = {"heartbeat": None}


async def echo(req: trionos.Request) -> None:
    """Echo every message; answer plain HTTP with a greeting."""
    if not req.is_upgrade:
        await req.respond_text(f"hello from {req.path}")
        return
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


# --- the bounded pipe -------------------------------------------------------------------------------------


async def test_pipe_passes_trios_half_closeable_stream_checks() -> None:
    """memory_pipe streams behave as trio specifies for HalfCloseableStream, clogged or not."""

    async def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        return memory_pipe()

    async def clogged() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        a, b = memory_pipe(max_bytes=1)
        await a.send_all(b"a")  # both directions full: the next send_all waits
        await b.send_all(b"b")
        return a, b

    await trio.testing.check_half_closeable_stream(pair, clogged)


async def test_pipe_send_waits_while_the_peer_buffer_is_full() -> None:
    """send_all stops at max_bytes unread and resumes as the peer reads; the bytes arrive intact."""
    a, b = memory_pipe(max_bytes=10)
    payload = bytes(range(25))
    done = trio.Event()

    async def send() -> None:
        await a.send_all(payload)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert (a.outgoing_bytes, b.incoming_bytes, done.is_set()) == (10, 10, False)
        received = await b.receive_some(4)
        await trio.testing.wait_all_tasks_blocked()
        assert a.outgoing_bytes == 10 and not done.is_set()
        while len(received) < len(payload):
            received += await b.receive_some()
    assert done.is_set() and received == payload


async def test_pipe_close_semantics() -> None:
    """EOF after buffered data, writes to a closed peer break, a closed end refuses everything."""
    a, b = memory_pipe()
    await a.send_all(b"last words")
    await a.aclose()
    assert await b.receive_some() == b"last words"
    assert await b.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await b.send_all(b"anyone?")
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    await a.aclose()  # idempotent
    with pytest.raises(ValueError, match="at least 1"):
        memory_pipe(0)


# --- backends ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "loopback"])
async def test_both_backends_serve_websockets_and_http(backend: trionos.testing.Backend) -> None:
    """The same code talks to the memory and the loopback backend: connect, get, dial."""
    async with open_app(echo, backend=backend, **NO_HEARTBEAT) as app:
        assert app.backend == backend
        async with app.connect("/echo") as ws:
            await ws.send("hi")
            await expect_message(ws, "hi")
            await ws.send(b"\x00\x01")
            await expect_message(ws, b"\x00\x01")
        response = await app.get("/page?x=1")
        assert (response.status, response.text) == (200, "hello from /page")
        assert response.headers["content-type"].startswith("text/plain")
        stream = await app.dial()
        await stream.aclose()


async def test_open_app_rejects_an_unknown_backend() -> None:
    """A typo in the backend name is an error that lists the choices."""
    with pytest.raises(ValueError, match="unknown trionos test backend 'memroy'"):
        async with open_app(echo, backend="memroy"):  # type: ignore[arg-type]
            pass


async def test_memory_server_keeps_its_original_api() -> None:
    """open_memory_server(handler, **options), .connect(path) and .open_stream() still work as before."""
    async with open_memory_server(echo, heartbeat=None) as memory:
        assert isinstance(memory, MemoryServer)
        async with memory.connect("/", subprotocols=(), message_queue_size=4) as ws:
            await ws.send_json({"a": 1})
            await expect_message(ws, {"a": 1})
        stream = memory.open_stream()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive_some()).startswith(b"HTTP/1.1 200 ")
        await stream.aclose()


# --- expectations -----------------------------------------------------------------------------------------


@pytest.fixture
async def echo_ws() -> AsyncIterator[trionos.WebSocket]:
    """A client of the echo handler over memory."""
    async with open_memory_server(echo, **NO_HEARTBEAT) as memory, memory.connect("/") as ws:
        yield ws


async def test_expect_message_matches_raw_json_typed_and_partial(echo_ws: trionos.WebSocket) -> None:
    """Raw str/bytes, JSON values, typed messages, classes and ANY all match what they should."""
    await echo_ws.send("plain")
    assert await expect_message(echo_ws, "plain") == "plain"
    await echo_ws.send('{"type":"error","reason":"no","extra":[1]}')
    got = await expect_message(echo_ws, {"type": "error", "reason": ANY, "extra": [1]})
    assert got["reason"] == "no"
    await echo_ws.send('{"type":"welcome","users":["ann"]}')
    assert await expect_message(echo_ws, Welcome(("ann",)), codec=SERVER_CODEC) == Welcome(("ann",))
    await echo_ws.send('{"type":"joined","username":"bob"}')
    assert await expect_message(echo_ws, Joined, codec=SERVER_CODEC) == Joined("bob")
    await echo_ws.send("[1, 2]")
    await expect_message(echo_ws, list)


async def test_expect_message_failure_shows_expected_and_got(echo_ws: trionos.WebSocket) -> None:
    """A different message fails with both values and the differing fields."""
    await echo_ws.send('{"type":"message","from":"ann","text":"hi"}')
    with pytest.raises(AssertionError) as info:
        await expect_message(echo_ws, {"type": "message", "from": "bob", "text": "hi", "room": "x"})
    text = str(info.value)
    assert "expected: {'type': 'message', 'from': 'bob'" in text
    assert "got:      {'type': 'message', 'from': 'ann'" in text
    assert "'from': expected 'bob', got 'ann'" in text
    assert "'room': missing (expected 'x')" in text
    await echo_ws.send(b"hi")
    with pytest.raises(AssertionError, match=r"expected: 'hi'\n  got:      b'hi'"):
        await expect_message(echo_ws, "hi")
    await echo_ws.send("not json")
    with pytest.raises(AssertionError, match="got a message that is not JSON: 'not json'"):
        await expect_message(echo_ws, {"a": 1})
    await echo_ws.send('{"type":"nope"}')
    with pytest.raises(AssertionError, match="the codec cannot decode"):
        await expect_message(echo_ws, Joined("x"), codec=SERVER_CODEC)


async def test_expect_message_times_out_on_virtual_time(
    autojump_clock: trio.testing.MockClock, echo_ws: trionos.WebSocket
) -> None:
    """Nothing arriving fails after exactly `timeout` virtual seconds."""
    start = trio.current_time()
    with pytest.raises(AssertionError, match=r"expected the message 'x' within 30 s, but nothing arrived"):
        await expect_message(echo_ws, "x", timeout=30)
    assert trio.current_time() - start == 30


async def test_expect_silence_passes_on_virtual_time_and_fails_on_a_message(
    autojump_clock: trio.testing.MockClock, echo_ws: trionos.WebSocket
) -> None:
    """Silence costs `timeout` virtual seconds; a message that arrives fails and is shown."""
    start = trio.current_time()
    await expect_silence(echo_ws, timeout=600)
    assert trio.current_time() - start == 600
    await echo_ws.send("boo")
    with pytest.raises(AssertionError, match="expected silence for 5 s, got the message 'boo'"):
        await expect_silence(echo_ws, timeout=5)


async def test_expectations_report_a_closed_connection(autojump_clock: trio.testing.MockClock) -> None:
    """expect_message/expect_silence fail on a close; expect_closed checks its code."""

    async def closer(req: trionos.Request) -> None:
        ws = await req.accept()
        await ws.recv()
        await ws.close(4000, "bye")

    async with open_memory_server(closer, **NO_HEARTBEAT) as memory:
        async with memory.connect("/") as ws:
            await ws.send("go")
            with pytest.raises(AssertionError, match=r"but the connection closed with code 4000 \(bye\)"):
                await expect_message(ws, "x")
        async with memory.connect("/") as ws:
            await ws.send("go")
            with pytest.raises(AssertionError, match="expected silence for 1 s, but the connection closed"):
                await expect_silence(ws)
        async with memory.connect("/") as ws:
            await ws.send("go")
            with pytest.raises(
                AssertionError, match="close with 1000, but the connection closed with code 4000"
            ):
                await expect_closed(ws, 1000)
        async with memory.connect("/") as ws:
            await ws.send("go")
            closed = await expect_closed(ws, 4000)
            assert closed.reason == "bye"
        async with memory.connect("/") as ws:
            with pytest.raises(AssertionError, match="close within 1 s, but it stayed open"):
                await expect_closed(ws)


# --- fault injection --------------------------------------------------------------------------------------


async def test_half_open_peer_is_closed_by_the_server_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that goes silent after the handshake is cut exactly heartbeat.timeout seconds later."""
    ended: list[float] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            async for _ in ws:
                pass
        finally:
            ended.append(trio.current_time())

    heartbeat = trionos.Heartbeat(interval=30, timeout=60)
    async with open_memory_server(handler, heartbeat=heartbeat) as memory:
        async with half_open_peer(memory) as peer:
            start = trio.current_time()
            await expect_closed(peer, timeout=61)
            assert ended == [start + 60]
            assert peer.pings_received == 1  # at 30 s; seen, never answered
            assert not memory.server.connections


@pytest.mark.parametrize("backend", ["memory", "loopback"])
async def test_disconnect_mid_frame_gives_the_handler_1006(backend: trionos.testing.Backend) -> None:
    """A peer that vanishes inside a frame makes the handler's recv raise ConnectionClosed(1006)."""
    outcome: list[tuple[list[str | bytes], int]] = []
    done = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        received = []
        try:
            while True:
                received.append(await ws.recv())
        except trionos.ConnectionClosed as exc:
            outcome.append((received, exc.code))
            done.set()

    async with open_app(handler, backend=backend, **NO_HEARTBEAT) as app:
        await disconnect_mid_frame(app, "/", before=["first", b"second"])
        with trio.fail_after(10):
            await done.wait()
    assert outcome == [(["first", b"second"], 1006)]


async def test_slow_consumer_blocks_the_servers_send_until_it_reads() -> None:
    """Writes to a peer that stops reading stall once the pipe is full, and resume when it reads."""
    sent: list[int] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        for i in range(50):
            await ws.send(f"{i:04}" + "x" * 996)
            sent.append(i)

    async with open_memory_server(handler, buffer_size=4096, **NO_HEARTBEAT) as memory:
        async with slow_consumer(memory) as peer:
            await trio.testing.wait_all_tasks_blocked()
            assert peer.stream.incoming_bytes == 4096
            assert len(sent) == 4  # 4 frames of 1004 bytes fit; the 5th is half in the pipe
            received = [await peer.recv() for _ in range(50)]
            assert [m[:4] for m in received] == [f"{i:04}" for i in range(50)]
            assert len(sent) == 50


async def test_slow_consumer_is_dropped_by_the_hub_policy(autojump_clock: trio.testing.MockClock) -> None:
    """In a room, a slow consumer fills its outbox and is closed with 1008 after the grace period."""
    closes: dict[str, int | None] = {}

    async with trionos.Hub(grace=2.0) as hub:

        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            async with hub.client(ws, name=req.path) as client:
                hub.join(client, "room")
                try:
                    async for _ in ws:
                        pass
                except trionos.ConnectionClosed:
                    pass
                closes[req.path] = ws.close_code

        options = {"buffer_size": 2048, "max_outbox_bytes": 8192, **NO_HEARTBEAT}
        async with open_memory_server(handler, **options) as memory:
            async with (
                memory.connect("/fast", message_queue_size=100) as fast,
                slow_consumer(memory, "/slow"),
            ):
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                for i in range(40):
                    await hub.broadcast("room", f"{i:04}" + "y" * 996)
                for i in range(40):  # the slow one holds the room's fan-out for up to `grace`
                    await expect_message(fast, f"{i:04}" + "y" * 996, timeout=10)
                assert trio.current_time() - start == pytest.approx(2.0)
                assert hub.slow_clients_dropped == 1
                # Without a socket, the 1008 close frame gets at most half a second to go out.
                await trio.sleep(1)
                assert closes == {"/slow": 1008}


async def test_raw_peer_is_rejected_like_a_client() -> None:
    """open_raw_peer raises ConnectionRejected with the server's status and body."""

    async def refuse(req: trionos.Request) -> None:
        await req.reject(403, "go away")

    async with open_memory_server(refuse, **NO_HEARTBEAT) as memory:
        with pytest.raises(trionos.ConnectionRejected) as info:
            async with open_raw_peer(memory):
                pass
    assert (info.value.status_code, info.value.body) == (403, b"go away")


# --- programs and the state machine -----------------------------------------------------------------------


@asynccontextmanager
async def relay_app() -> AsyncIterator[trionos._server.Handler]:
    """Every message goes to every other client (one hub room)."""
    async with trionos.Hub() as hub:

        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            async with hub.client(ws) as client:
                hub.join(client, "all")
                async for message in ws:
                    await hub.broadcast("all", message, exclude=client)

        yield handler


class RelayModel:
    """What relay_app should do: everyone connected but the sender gets each message."""

    def __init__(self, *, echo_to_sender: bool = False) -> None:
        self.connected: set[int] = set()
        self.echo_to_sender = echo_to_sender

    def connect(self, client: int) -> dict[int, list[Any]]:
        self.connected.add(client)
        return {}

    def send(self, client: int, message: Any) -> dict[int, list[Any]]:
        return {c: [message] for c in self.connected if c != client or self.echo_to_sender}

    def disconnect(self, client: int) -> dict[int, list[Any]]:
        self.connected.discard(client)
        return {}


def test_run_program_passes_a_correct_model() -> None:
    """A hand-written program with clean and abrupt disconnects matches the model."""
    program = [
        Connect(0),
        Connect(1),
        Send(0, {"n": 1}),
        Connect(2),
        Send(2, [1, 2]),
        Disconnect(1, abrupt=True),
        Send(0, 3),
        Disconnect(0),
        Send(2, None),
    ]
    run_program(program, RelayModel(), relay_app, heartbeat=None)


def test_run_program_reports_the_first_wrong_step() -> None:
    """A model that disagrees fails at the first differing step with expected and got."""
    with pytest.raises(AssertionError) as info:
        run_program([Connect(0), Connect(1), Send(0, {"n": 1})], RelayModel(echo_to_sender=True), relay_app)
    text = str(info.value)
    assert text.startswith("after step 2, Send(client=0, message={'n': 1}):")
    assert "client 0 received the wrong messages\n    expected: [{'n': 1}]\n    got:      []" in text
    assert "  1: Connect(client=1)" in text
    with pytest.raises(ValueError, match=r"step 0, Send\(client=5, message=1\): client 5 is not connected"):
        run_program([Send(5, 1)], RelayModel(), relay_app)


@settings(max_examples=25, deadline=None, database=None)
@given(programs(st.integers(0, 9) | st.lists(st.booleans(), max_size=2), clients=3, max_steps=12))
def test_generated_programs_hold_for_the_relay(program: list[Connect | Send | Disconnect]) -> None:
    """Hypothesis-generated programs are valid and the relay matches its model on each."""
    run_program(program, RelayModel(), relay_app, heartbeat=None)


class RelayMachine(AppStateMachine):
    """The relay, driven by hypothesis's stateful testing."""

    messages = st.integers(0, 9)
    serve_options = NO_HEARTBEAT

    def make_model(self) -> RelayModel:
        return RelayModel()

    def open_app(self) -> Any:
        return relay_app()


class WrongRelayMachine(RelayMachine):
    """A machine whose model wrongly expects echoes, to check that failures surface."""

    def make_model(self) -> RelayModel:
        return RelayModel(echo_to_sender=True)


def test_app_state_machine_runs_the_relay() -> None:
    """The state machine connects, sends and disconnects clients and finds no discrepancy."""
    run_state_machine_as_test(
        RelayMachine, settings=settings(max_examples=15, stateful_step_count=12, database=None)
    )


def test_app_state_machine_finds_a_wrong_model() -> None:
    """A model that disagrees with the app makes the machine fail with the kit's message."""
    with pytest.raises(AssertionError, match="received the wrong messages"):
        run_state_machine_as_test(
            WrongRelayMachine,
            settings=settings(max_examples=50, stateful_step_count=8, database=None, print_blob=False),
        )


# --- the package and the plugin ---------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    """trionos.testing.__all__ is sorted, every name resolves, and no public name is left out."""
    names = trionos.testing.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(trionos.testing, name) is not None
    helpers = {"annotations", "importlib", "TYPE_CHECKING", "Any"}  # what the module itself imports
    # ("@..." names are pytest's: it rewrites the asserts of packages that register a pytest plugin.)
    public = {n for n in vars(trionos.testing) if not n.startswith(("_", "@"))} - helpers
    assert public <= set(names)


def test_importing_the_kit_does_not_import_hypothesis() -> None:
    """hypothesis is loaded only when a strategy or the state machine is used."""
    code = "import sys, trionos.testing; assert 'hypothesis' not in sys.modules; trionos.testing.messages"
    subprocess.run([sys.executable, "-c", code], check=True)


PLUGIN_TESTS = """
import pytest
import trio
import trionos
from trionos.testing import expect_message, expect_silence


async def echo(req):
    if not req.is_upgrade:
        await req.respond_text("hello")
        return
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


@pytest.fixture
def trionos_handler():
    return echo


@pytest.fixture
def trionos_serve_options():
    return {"heartbeat": None}


async def test_default(trionos_app, trionos_client, trionos_backend):
    ws = await trionos_client("/")
    await ws.send("hi")
    await expect_message(ws, "hi")
    assert (await trionos_app.get("/")).text == "hello"
    assert trionos_app.backend == trionos_backend


@pytest.mark.trionos_backend("memory", "loopback")
async def test_marked(trionos_app, trionos_client):
    ws = await trionos_client()
    await ws.send(b"x")
    await expect_message(ws, b"x")


async def test_virtual_time(trionos_app, trionos_client, autojump_clock):
    ws = await trionos_client()
    await expect_silence(ws, timeout=3600)


async def test_fixed_backends(trionos_memory_server, trionos_loopback_server):
    assert trionos_memory_server.backend == "memory"
    assert trionos_loopback_server.server.port > 0
"""


def test_plugin_fixtures_marker_and_option(pytester: pytest.Pytester) -> None:
    """The plugin's fixtures work; the marker and --trionos-backend choose backends; loopback skips
    autojump tests."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=PLUGIN_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*test_default PASSED*", "*test_marked?memory? PASSED*", "*test_marked?loopback?*"]
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--trionos-backend=loopback", "-v")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*test_default?loopback? PASSED*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--trionos-backend=all")
    result.assert_outcomes(passed=6, skipped=1)


def test_plugin_asks_for_a_handler(pytester: pytest.Pytester) -> None:
    """Without a trionos_handler fixture the failure says what to define."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_app="async def test_x(trionos_app):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a `trionos_handler` fixture*"])
