"""Strings that are not Unicode text (a JSON-escaped lone surrogate) get an `error` reply, end to end.

``{"type":"join","username":"\\udfff"}`` is valid JSON and used to decode into a ``str`` that cannot
be encoded to UTF-8: the Redis presence record then failed in the broker task and the whole node
exited; without Redis the sender was closed with 1011. The codec now refuses such strings where
they enter, so the room chat answers with an ``error`` and goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import ANY

import trio

import trionos
from tests.test_room_chat_redis import PATIENCE, client, joined, open_node
from trionos.testing import expect_message, expect_silence

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from room_chat import make_handler, make_hub

#: JSON text (pure ASCII) whose strings decode to a lone surrogate.
BAD_JOIN = '{"type":"join","username":"\\udfff"}'
BAD_CHAT = '{"type":"chat","text":"hi \\ud800"}'


async def expect_unicode_error(ws: trionos.WebSocket, field: str) -> None:
    reply = await ws.recv_json()
    assert reply["type"] == "error", reply
    assert f"the string at {field!r} must be Unicode text" in reply["reason"], reply


async def test_a_lone_surrogate_username_gets_an_error_and_the_redis_node_keeps_serving(
    redis: str, prefix: str, tmp_path: Path
) -> None:
    """On a Redis-backed room_chat node, a join with a lone surrogate is answered with `error`; the
    node stays up and its members keep chatting."""
    async with open_node(redis, prefix, tmp_path) as node, client(node, "ann", users=["ann"]) as ann:
        async with trionos.connect(node.url) as attacker:
            await attacker.send(BAD_JOIN)
            with trio.fail_after(PATIENCE):
                await expect_unicode_error(attacker, "username")
            await attacker.send(BAD_CHAT)
            with trio.fail_after(PATIENCE):
                await expect_unicode_error(attacker, "text")
            # Still open and still served: it can join under a proper name.
            await attacker.send_json({"type": "join", "username": "eve"})
            await expect_message(attacker, {"type": "welcome", "users": ["ann", "eve"]}, timeout=PATIENCE)
        await expect_message(ann, joined("eve"), timeout=PATIENCE)
        await expect_message(ann, {"type": "left", "username": "eve"}, timeout=PATIENCE)
        async with client(node, "bob", users=["ann", "bob"]):
            await expect_message(ann, joined("bob"), timeout=PATIENCE)
        assert node.process.returncode is None, node.tail()
        assert "Traceback" not in node.tail(), node.tail()


async def test_a_lone_surrogate_gets_an_error_without_redis(start_server: object) -> None:
    """Without a broker, lone surrogates in a join or a chat get `error` replies, not a 1011 close,
    and the room's other members see nothing of them."""
    async with make_hub(history=None) as hub:
        server = await start_server(make_handler(hub))  # type: ignore[operator]
        async with trionos.connect(server.url) as ann, trionos.connect(server.url) as mallory:
            await ann.send_json({"type": "join", "username": "ann"})
            await expect_message(ann, {"type": "welcome", "users": ["ann"]})
            await mallory.send(BAD_JOIN)
            await expect_unicode_error(mallory, "username")
            await mallory.send_json({"type": "join", "username": "mallory"})
            await expect_message(mallory, {"type": "welcome", "users": ["ann", "mallory"]})
            await expect_message(ann, joined("mallory"))
            await mallory.send(BAD_CHAT)
            await expect_unicode_error(mallory, "text")
            await mallory.send_json({"type": "chat", "text": "fine"})
            await expect_message(ann, {"type": "message", "from": "mallory", "text": "fine", "time": ANY})
            await expect_silence(ann, timeout=0.1)
