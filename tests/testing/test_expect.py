"""expect_message, expect_silence and expect_closed: what they accept, and how they fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from unittest.mock import ANY

import pytest
import trio
import trio.testing

import trionos
from tests.testing.apps import NO_HEARTBEAT, echo
from trionos.chat import SERVER_CODEC, Joined, Welcome
from trionos.testing import expect_closed, expect_message, expect_silence, open_memory_server


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
