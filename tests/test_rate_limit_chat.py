"""The hub's per-client rate limit in the room chat, on virtual time: `error` replies over the
limit, a 1008 close for a client that keeps sending, and counters for both."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest
import trio

import trionos
from tests.helpers import ServeFn
from trionos.testing import expect_message, expect_silence, open_memory_server

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from room_chat import make_handler, make_hub, parse_args

SLOW_DOWN = {"type": "error", "reason": "too many messages: slow down"}


def said(text: str) -> dict[str, object]:
    return {"type": "message", "from": "mal", "text": text, "time": ANY}


async def test_messages_over_the_limit_get_an_error_and_are_not_broadcast(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Bursts of 3 at 10/s: the join and two chats pass, the next three are refused with `error`
    and never reach the room; a tenth of a second later one more passes."""
    hub = make_hub(history=None, rate_limit=trionos.RateLimit(rate=10.0, burst=3, close_after=5))
    async with hub, open_memory_server(make_handler(hub), heartbeat=None) as app:
        async with app.connect() as ann, app.connect() as mal:
            await ann.send_json({"type": "join", "username": "ann"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
            await mal.send_json({"type": "join", "username": "mal"})
            await expect_message(mal, {"type": "welcome", "users": ["ann", "mal"]})
            await expect_message(ann, {"type": "joined", "username": "mal"})
            for i in range(5):
                await mal.send_json({"type": "chat", "text": f"m{i}"})
            for _ in range(3):
                await expect_message(mal, SLOW_DOWN)
            await expect_message(ann, said("m0"))
            await expect_message(ann, said("m1"))
            await expect_silence(ann, timeout=0.01)
            await trio.sleep(0.1)
            await mal.send_json({"type": "chat", "text": "later"})
            await expect_message(ann, said("later"))
            assert not mal.closed
    assert hub.metrics.rate_limited == 3


async def test_a_client_that_keeps_sending_while_refused_is_closed_with_1008(start_server: ServeFn) -> None:
    """Over real sockets: after close_after refusals in a row the hub closes the flooder with 1008
    (the refusals before that got `error`s); the room's other member goes on."""
    hub = make_hub(history=None, rate_limit=trionos.RateLimit(rate=1.0, burst=3, close_after=5))
    async with hub:
        server = await start_server(make_handler(hub))
        async with trionos.connect(server.url) as ann, trionos.connect(server.url) as mal:
            await ann.send_json({"type": "join", "username": "ann"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
            with contextlib.suppress(trionos.ConnectionClosed):
                for i in range(100):
                    await mal.send_json({"type": "chat", "text": f"flood {i}"})
            for _ in range(3):  # the burst: handled (and refused by the chat, as mal never joined)
                await expect_message(
                    mal, {"type": "error", "reason": "join a room before sending chat messages"}
                )
            for _ in range(4):
                await expect_message(mal, SLOW_DOWN)
            with pytest.raises(trionos.ConnectionClosed) as closed:
                await mal.recv()
            assert closed.value.code == 1008
            assert closed.value.reason == "rate limit: over 1 messages/s, 5 refused in a row"
            await ann.send_json({"type": "join", "username": "ann", "room": "other"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    assert hub.metrics.rate_limited == 5


def test_room_chat_has_a_rate_limit_by_default() -> None:
    """The example limits each client to 10 messages per second unless told otherwise."""
    assert parse_args([]).rate_limit == 10.0
    assert parse_args(["--rate-limit", "0"]).rate_limit == 0.0
