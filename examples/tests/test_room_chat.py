"""Tests of the room chat (``examples/room_chat.py``), written the way an application's own tests are.

Every test that uses ``trionos_app``/``trionos_client`` runs twice, over in-memory connections and
over a real server on 127.0.0.1 (the module's ``trionos_backend`` marker); tests that need virtual
time say ``trionos_backend("memory")``. The model-based tests at the end let Hypothesis write the
client programs.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import trio
import trio.testing
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import trionos
from trionos.chat import CLIENT_CODEC, SERVER_CODEC, Message, Welcome
from trionos.testing import (
    AppServer,
    AppStateMachine,
    ClientFactory,
    expect_message,
    expect_silence,
    half_open_peer,
    malformed_payloads,
    open_memory_server,
    open_raw_peer,
    programs,
    run_program,
)

# The examples are loose scripts, not a package: put their directory on the path, as a project's
# packaging or its `pythonpath` setting would. (No conftest.py here: this directory is called
# `tests` too, and a conftest.py in it could shadow the main suite's when both are on the path.)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import room_chat

pytestmark = pytest.mark.trionos_backend("memory", "loopback")

ERROR = {"type": "error", "reason": ANY}


@asynccontextmanager
async def chat_app() -> AsyncIterator[trionos._server.Handler]:
    """A fresh room chat: its hub lives as long as the block."""
    async with trionos.Hub(codec=SERVER_CODEC) as hub:
        yield room_chat.make_handler(hub)


@pytest.fixture
async def trionos_handler() -> AsyncIterator[trionos._server.Handler]:
    """The app under test, for the trionos_* fixtures."""
    async with chat_app() as handler:
        yield handler


@pytest.fixture
def trionos_serve_options() -> dict[str, Any]:
    """The server settings the chat runs with in production."""
    return {"heartbeat": trionos.Heartbeat(interval=30, timeout=60)}


async def join(ws: Any, username: str, room: str = "lobby") -> None:
    """Send a join message."""
    await ws.send_json({"type": "join", "username": username, "room": room})


# --- behaviour, one scenario per test ---------------------------------------------------------------------


async def test_the_page_is_served_on_the_same_port(trionos_app: AppServer) -> None:
    """GET / returns the chat page."""
    response = await trionos_app.get("/")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")


async def test_the_page_imports_the_browser_client_the_package_ships(trionos_app: AppServer) -> None:
    """The page imports ./trionos.js, and GET /trionos.js answers the installed package's module."""
    page = await trionos_app.get("/")
    assert 'from "./trionos.js"' in page.text
    response = await trionos_app.get("/trionos.js")
    assert response.status == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.body == trionos.client_path().read_bytes()
    assert b"export class Socket" in response.body


async def test_chat_in_a_room(trionos_client: ClientFactory) -> None:
    """Joiners are welcomed and announced, messages reach the others, leaving is announced."""
    ann, bob = await trionos_client(), await trionos_client()
    await join(ann, "ann", "tea")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    await join(bob, "bob", "tea")
    await expect_message(bob, Welcome(("ann", "bob")), codec=SERVER_CODEC)
    await expect_message(ann, {"type": "joined", "username": "bob"})
    await ann.send_json({"type": "chat", "text": "hi bob"})
    await expect_message(bob, Message("ann", "hi bob", time=ANY), codec=SERVER_CODEC)
    await bob.send_json({"type": "leave"})
    await expect_message(ann, {"type": "left", "username": "bob"})


async def test_rooms_do_not_hear_each_other(trionos_client: ClientFactory) -> None:
    """A message in one room never reaches another; the sender gets no echo."""
    ann, bob = await trionos_client(), await trionos_client()
    await join(ann, "ann", "a")
    await join(bob, "bob", "b")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    await expect_message(bob, {"type": "welcome", "users": ["bob"]})
    await ann.send_json({"type": "chat", "text": "anyone?"})
    # Short: on the loopback backend this is wall-clock time.
    await expect_silence(bob, timeout=0.05)
    await expect_silence(ann, timeout=0.05)


async def test_bad_input_is_answered_and_the_connection_stays(trionos_client: ClientFactory) -> None:
    """Bad JSON, unknown types, chatting before joining and taken names all get an error."""
    ann, imposter = await trionos_client(), await trionos_client()
    await ann.send("{")
    await expect_message(ann, ERROR)
    await ann.send_json({"type": "dance"})
    await expect_message(ann, ERROR)
    await ann.send_json({"type": "chat", "text": "hi"})
    await expect_message(ann, {"type": "error", "reason": "join a room before sending chat messages"})
    await join(ann, "ann")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    await join(imposter, "ann")
    await expect_message(imposter, ERROR)


async def test_a_client_that_vanishes_mid_frame_is_announced_as_left(
    trionos_app: AppServer, trionos_client: ClientFactory
) -> None:
    """When a member's connection breaks inside a frame, the room hears that it left."""
    ann = await trionos_client()
    await join(ann, "ann")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    async with open_raw_peer(trionos_app) as bob:
        await join(bob, "bob")
        await expect_message(bob, {"type": "welcome", "users": ["ann", "bob"]})
        await expect_message(ann, {"type": "joined", "username": "bob"})
        await bob.disconnect_mid_frame('{"type":"chat","text":"never finished"}')
    await expect_message(ann, {"type": "left", "username": "bob"})


@pytest.mark.trionos_backend("memory")
async def test_a_silent_member_times_out_after_a_minute(
    autojump_clock: trio.testing.MockClock, trionos_app: AppServer, trionos_client: ClientFactory
) -> None:
    """A member whose connection goes half-open is dropped by the heartbeat 60 s later (virtual time)."""
    ann = await trionos_client()
    await join(ann, "ann")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    async with half_open_peer(trionos_app) as bob:
        await bob.send('{"type":"join","username":"bob"}')
        await expect_message(ann, {"type": "joined", "username": "bob"})
        await expect_silence(ann, timeout=59)  # ann answers the pings, bob does not
        await expect_message(ann, {"type": "left", "username": "bob"}, timeout=2)


# --- history and recovery ---------------------------------------------------------------------------------


def said(text: str, offset: int, by: str = "ann") -> dict[str, Any]:
    """A chat message as a member receives it from a room with history."""
    return {"type": "message", "from": by, "text": text, "offset": offset, "time": ANY, "epoch": ANY}


def welcomed(users: list[str], epoch: Any, offset: int, **recovered: bool) -> dict[str, Any]:
    """A welcome from a room with history."""
    return {"type": "welcome", "users": users, "epoch": epoch, "offset": offset, **recovered}


@pytest.mark.trionos_backend("memory")
async def test_a_client_that_comes_back_gets_what_it_missed_exactly_once() -> None:
    """With history on (the default), a rejoin with ``since`` replays what was missed after the welcome."""
    async with room_chat.make_hub() as hub, open_memory_server(room_chat.make_handler(hub)) as server:
        async with server.connect() as ann:
            await join(ann, "ann", "tea")
            epoch = (await expect_message(ann, welcomed(["ann"], ANY, 0)))["epoch"]
            async with server.connect() as bob:
                await join(bob, "bob", "tea")
                await expect_message(bob, welcomed(["ann", "bob"], epoch, 0))
                await ann.send_json({"type": "chat", "text": "one"})
                await expect_message(bob, said("one", 1))
                await bob.send_json({"type": "chat", "text": "mine"})  # offset 2, never replayed to bob
            for text in ("two", "three"):
                await ann.send_json({"type": "chat", "text": text})
            async with server.connect() as bob:
                rejoin = {"type": "join", "username": "bob", "room": "tea"}
                await bob.send_json({**rejoin, "since": {"epoch": epoch, "offset": 1}})
                await expect_message(bob, welcomed(["ann", "bob"], epoch, 4, recovered=True))
                await expect_message(bob, said("two", 3))
                await expect_message(bob, said("three", 4))
                await ann.send_json({"type": "chat", "text": "four"})
                await expect_message(bob, said("four", 5))
                await bob.send_json({**rejoin, "since": {"epoch": "lost", "offset": 4}})
                await expect_message(bob, welcomed(["ann", "bob"], epoch, 5, recovered=False))
                for text, offset in (("one", 1), ("two", 3), ("three", 4), ("four", 5)):
                    await expect_message(bob, said(text, offset))


@pytest.mark.trionos_backend("memory")
async def test_acknowledgements_carry_the_message_id_back() -> None:
    """A chat with an id is acked with its offset and time; join, leave and errors echo their id."""
    async with room_chat.make_hub() as hub, open_memory_server(room_chat.make_handler(hub)) as server:
        async with server.connect() as ann, server.connect() as bob:
            await ann.send_json({"type": "chat", "text": "early", "id": "c0"})
            await expect_message(ann, {**ERROR, "id": "c0"})
            await ann.send_json({"type": "join", "username": "ann", "room": "tea", "id": 1})
            welcome = await expect_message(ann, {**welcomed(["ann"], ANY, 0), "id": 1})
            await bob.send_json({"type": "join", "username": "ann", "room": "tea", "id": "dup"})
            taken = "username 'ann' is already taken in room 'tea'"
            await expect_message(bob, {"type": "error", "reason": taken, "id": "dup"})
            await join(bob, "bob", "tea")
            await expect_message(bob, welcomed(["ann", "bob"], welcome["epoch"], 0))
            await expect_message(ann, {"type": "joined", "username": "bob"})
            await ann.send_json({"type": "chat", "text": "hi", "id": "c1"})
            ack = await expect_message(ann, {"type": "ack", "id": "c1", "offset": 1, "time": ANY})
            message = await expect_message(bob, said("hi", 1))
            assert message["time"] == ack["time"]
            await bob.send_json({"type": "leave", "id": 7})
            await expect_message(bob, {"type": "left", "username": "bob", "id": 7})
            await expect_message(ann, {"type": "left", "username": "bob"})
            await bob.send_json({"type": "leave", "id": 8})
            await expect_message(bob, {"type": "error", "reason": "not in a room", "id": 8})
            await bob.send_json({"type": "leave"})  # without an id: as before, nothing
            await expect_silence(bob, timeout=0.05)


@pytest.mark.trionos_backend("memory")
async def test_a_message_keeps_its_time_on_replay_and_a_join_can_ask_for_the_last_messages() -> None:
    """``history: N`` replays the room's last N messages after the welcome, each with its original time."""
    async with room_chat.make_hub() as hub, open_memory_server(room_chat.make_handler(hub)) as server:
        async with server.connect() as ann:
            await join(ann, "ann", "tea")
            await expect_message(ann, welcomed(["ann"], ANY, 0))
            times = []
            for text in ("one", "two", "three"):
                await ann.send_json({"type": "chat", "text": text, "id": text})
                times.append(
                    (await expect_message(ann, {"type": "ack", "id": text, "offset": ANY, "time": ANY}))[
                        "time"
                    ]
                )
            async with server.connect() as bob:
                await bob.send_json({"type": "join", "username": "bob", "room": "tea", "history": 2})
                await expect_message(bob, welcomed(["ann", "bob"], ANY, 3))
                assert (await expect_message(bob, said("two", 2)))["time"] == times[1]
                assert (await expect_message(bob, said("three", 3)))["time"] == times[2]
                await ann.send_json({"type": "chat", "text": "four"})
                await expect_message(bob, said("four", 4))


# --- model-based: Hypothesis writes the programs ----------------------------------------------------------


class ChatModel:
    """What the room chat should do, in plain Python: rooms of (client, username) in join order."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.seats: dict[int, tuple[str, str]] = {}  # client -> (room, username)

    def connect(self, client: int) -> dict[int, list[Any]]:
        return {}

    def disconnect(self, client: int) -> dict[int, list[Any]]:
        return self._leave(client)

    def send(self, client: int, message: Any) -> dict[int, list[Any]]:
        if not isinstance(message, dict):
            return {client: [ERROR]}
        if message["type"] == "join":
            return self._join(client, message["username"], message["room"])
        if message["type"] == "leave":
            return self._leave(client)
        if client not in self.seats:
            return {client: [ERROR]}
        room, name = self.seats[client]
        said = {"type": "message", "from": name, "text": message["text"], "time": ANY}
        return {other: [said] for other, _ in self.rooms[room] if other != client}

    def _leave(self, client: int) -> dict[int, list[Any]]:
        if client not in self.seats:
            return {}
        room, name = self.seats.pop(client)
        self.rooms[room].remove((client, name))
        return {other: [{"type": "left", "username": name}] for other, _ in self.rooms[room]}

    def _join(self, client: int, username: str, room: str) -> dict[int, list[Any]]:
        taken = any(name == username for other, name in self.rooms[room] if other != client)
        if not username.strip() or taken:
            return {client: [ERROR]}
        if self.seats.get(client) == (room, username):  # the same seat again: only a welcome
            return {client: [{"type": "welcome", "users": [name for _, name in self.rooms[room]]}]}
        deliveries: dict[int, list[Any]] = defaultdict(list, self._leave(client))
        self.rooms[room].append((client, username))
        self.seats[client] = (room, username)
        deliveries[client].append({"type": "welcome", "users": [name for _, name in self.rooms[room]]})
        for other, _ in self.rooms[room]:
            if other != client:
                deliveries[other].append({"type": "joined", "username": username})
        return deliveries


JOINS = st.builds(
    lambda username, room: {"type": "join", "username": username, "room": room},
    st.sampled_from(["ann", "bob", " "]),
    st.sampled_from(["a", "b"]),
)
CHATS = st.builds(lambda text: {"type": "chat", "text": text}, st.sampled_from(["hi", "ho"]))
#: What clients send: few names and rooms, so that collisions and shared rooms are common, and
#: joins and chats twice as often as the rest, because they are what reaches other clients.
CLIENT_MESSAGES = st.one_of(
    JOINS,
    CHATS,
    JOINS,
    CHATS,
    st.just({"type": "leave"}),
    st.sampled_from(["{", '{"type":"dance"}']),
)


#: Hypothesis's explain phase traces every line the app runs while it replays a failure, which
#: takes much longer than the shrinking itself on an async app: skip it.
PHASES = [phase for phase in Phase if phase is not Phase.explain]


@settings(max_examples=150, deadline=None, phases=PHASES)
@given(programs(CLIENT_MESSAGES, clients=3, max_steps=25))
def test_room_chat_matches_its_model(program: list[Any]) -> None:
    """Any program of joins, chats, leaves, bad input and (abrupt) disconnects matches the model."""
    run_program(program, ChatModel(), chat_app, heartbeat=None)


class RoomChatMachine(AppStateMachine):
    """The same model, driven step by step by Hypothesis's stateful testing."""

    messages = CLIENT_MESSAGES
    serve_options = {"heartbeat": None}  # noqa: RUF012 - read-only configuration

    def make_model(self) -> ChatModel:
        return ChatModel()

    def open_app(self) -> Any:
        return chat_app()


TestRoomChatMachine = RoomChatMachine.TestCase
TestRoomChatMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None, phases=PHASES)


@settings(max_examples=30, deadline=None)
@given(malformed_payloads(CLIENT_CODEC))
def test_any_malformed_payload_gets_an_error(payload: str) -> None:
    """Whatever is wrong with a message, the answer is an error and the connection stays open."""

    async def main() -> None:
        async with chat_app() as handler, open_memory_server(handler, heartbeat=None) as app:
            async with app.connect("/") as ws:
                await ws.send(payload)
                await expect_message(ws, ERROR)
                await ws.send_json({"type": "leave"})
                await expect_silence(ws)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_look_alike_and_overlong_names_are_one_name_or_refused_precisely(
    trionos_client: ClientFactory,
) -> None:
    """Invisible, reversed, mixed-script and control characters, spaces, 1 MB: never a second ann."""
    ann = await trionos_client()
    await join(ann, "ann", "tea")
    await expect_message(ann, {"type": "welcome", "users": ["ann"]})
    refusals = {
        "ann\u200b": "username must not contain U+200B (a Cf character)",
        "ann\u202e": "username must not contain U+202E (a Cf character)",
        "a\x00nn": "username must not contain U+0000 (a Cc character)",
        "\u0430nn": "username must not mix Cyrillic and Latin letters",
        " ann ": "username 'ann' is already taken in room 'tea'",
        "\uff41\uff4e\uff4e": "username 'ann' is already taken in room 'tea'",
        "x" * 1_000_000: "username is 1000000 bytes long; the limit is 64",
    }
    for name, reason in refusals.items():
        other = await trionos_client()
        await other.send_json({"type": "join", "username": name, "room": "tea", "id": 1})
        await expect_message(other, {"type": "error", "reason": reason, "id": 1})
    other = await trionos_client()
    await other.send_json({"type": "join", "username": "bob", "room": "t" * 129})
    await expect_message(other, {"type": "error", "reason": "room is 129 bytes long; the limit is 128"})
    await expect_silence(ann, timeout=0.05)
