"""Tests of the token chat (``examples/token_chat.py``): signed, short-lived tokens and per-user rooms.

Each test runs over in-memory connections and over a real server on 127.0.0.1 (the module's
``trionos_backend`` marker), the way an application's own tests would.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import itsdangerous
import pytest

import trionos
from trionos.testing import ClientFactory, expect_message, expect_silence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import token_chat

pytestmark = pytest.mark.trionos_backend("memory", "loopback")

SECRET = "test secret"
SIGNER = token_chat.serializer(SECRET)


@pytest.fixture
async def trionos_handler() -> AsyncIterator[trionos.Handler]:
    """The app under test, for the trionos_* fixtures: its hub lives as long as the test."""
    async with token_chat.make_app(SECRET, origins=["https://chat.example"]).lifespan() as handler:
        yield handler


def bearer(user: str, *rooms: str, signer: itsdangerous.URLSafeTimedSerializer = SIGNER) -> dict[str, Any]:
    """Client settings that send a fresh token for *user* in the Authorization header."""
    token = token_chat.issue(signer, user, rooms)
    return {"extra_headers": [("Authorization", f"Bearer {token}")]}


class Past(itsdangerous.TimestampSigner):
    """Signs as if it were an hour ago: its tokens are expired when they arrive."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 3600


async def refused(trionos_client: ClientFactory, **settings: Any) -> trionos.ConnectionRejected:
    """Connect and return the rejection the server answered with."""
    with pytest.raises(trionos.ConnectionRejected) as rejection:
        await trionos_client("/", **settings)
    return rejection.value


def header(rejection: trionos.ConnectionRejected, name: str) -> str | None:
    """A response header of the rejection, by case-insensitive name."""
    return next((value for key, value in rejection.headers if key.lower() == name), None)


async def test_no_expired_or_forged_token_is_refused_with_401_and_a_challenge(
    trionos_client: ClientFactory,
) -> None:
    """Without a token, with an expired one, or one signed with another key: 401 and WWW-Authenticate."""
    plain = await refused(trionos_client)
    assert plain.status_code == 401
    assert header(plain, "www-authenticate") == 'Bearer realm="token_chat"'
    past = itsdangerous.URLSafeTimedSerializer(SECRET, salt="trionos.token_chat", signer=Past)
    expired = await refused(trionos_client, **bearer("ann", "lobby", signer=past))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in (header(expired, "www-authenticate") or "")
    assert expired.body == b"token expired"
    forged = await refused(trionos_client, **bearer("ann", "lobby", signer=token_chat.serializer("guess")))
    assert forged.body == b"bad token"


async def test_a_browser_cookie_counts_only_from_an_allowed_origin(trionos_client: ClientFactory) -> None:
    """The token cookie from the chat's own page connects; the same cookie from another site gets 403."""
    cookie = ("Cookie", f"token={token_chat.issue(SIGNER, 'ann', ['lobby'])}")
    evil = await refused(trionos_client, extra_headers=[cookie, ("Origin", "https://evil.example")])
    assert evil.status_code == 403
    ann = await trionos_client("/", extra_headers=[cookie, ("Origin", "https://chat.example")])
    await ann.send_json({"type": "join", "room": "lobby"})
    await expect_message(ann, {"type": "welcome", "room": "lobby", "users": ["ann"]})


async def test_users_join_only_their_rooms_and_their_own(trionos_client: ClientFactory) -> None:
    """The token's rooms and ``@user`` are open; another room is refused with a reason nobody else hears."""
    ann = await trionos_client("/", **bearer("ann", "lobby", "dev"))
    bob = await trionos_client("/", **bearer("bob", "lobby"))
    await ann.send_json({"type": "join", "room": "dev"})
    await expect_message(ann, {"type": "welcome", "room": "dev", "users": ["ann"]})
    await bob.send_json({"type": "join", "room": "dev", "id": 1})
    await expect_message(bob, {"type": "error", "reason": "bob may not join 'dev'", "id": 1})
    await bob.send_json({"type": "join", "room": "@ann"})
    await expect_message(bob, {"type": "error", "reason": "bob may not join '@ann'"})
    await expect_silence(ann, timeout=0.05)
    await bob.send_json({"type": "join", "room": "@bob"})
    await expect_message(bob, {"type": "welcome", "room": "@bob", "users": ["bob"]})


async def test_chat_in_several_rooms_with_acks_and_presence(trionos_client: ClientFactory) -> None:
    """A user in two rooms: messages stay in their room, a chat with an id is acked, leaving is announced."""
    ann = await trionos_client("/", **bearer("ann", "lobby", "dev"))
    bob = await trionos_client("/", **bearer("bob", "lobby", "dev"))
    for room in ("lobby", "dev"):
        await ann.send_json({"type": "join", "room": room})
        await expect_message(ann, {"type": "welcome", "room": room, "users": ["ann"]})
    for room in ("lobby", "dev"):
        await bob.send_json({"type": "join", "room": room})
    await expect_message(bob, {"type": "welcome", "room": "lobby", "users": ["ann", "bob"]})
    await expect_message(bob, {"type": "welcome", "room": "dev", "users": ["ann", "bob"]})
    await expect_message(ann, {"type": "joined", "room": "lobby", "user": "bob"})
    await expect_message(ann, {"type": "joined", "room": "dev", "user": "bob"})
    await ann.send_json({"type": "chat", "room": "dev", "text": "hi", "id": "c1"})
    ack = await expect_message(ann, {"type": "ack", "id": "c1", "time": ANY})
    message = {
        "type": "message",
        "room": "dev",
        "from": "ann",
        "text": "hi",
        "time": ack["time"],
        "offset": 1,
    }
    await expect_message(bob, message)
    await bob.send_json({"type": "leave", "room": "dev", "id": 2})
    await expect_message(bob, {"type": "left", "room": "dev", "user": "bob", "id": 2})
    await expect_message(ann, {"type": "left", "room": "dev", "user": "bob"})
    await bob.send_json({"type": "chat", "room": "dev", "text": "still here?", "id": 3})
    await expect_message(bob, {"type": "error", "reason": "join 'dev' first", "id": 3})
    await bob.send_json({"type": "join", "room": "dev", "history": 1})
    await expect_message(bob, {"type": "welcome", "room": "dev", "users": ["ann", "bob"]})
    await expect_message(bob, message)
