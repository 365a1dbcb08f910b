"""Channels: typed handlers, connect and join authorization, presence with metadata, acknowledgements.

A small app with its own protocol (presence carries a ``status``), served over memory pipes and,
where the HTTP response matters, over real sockets on 127.0.0.1; the presence test across nodes
runs two hubs on one real Redis.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trionos
from trionos.chat import MessageId
from trionos.testing import (
    expect_closed,
    expect_message,
    expect_silence,
    malformed_payloads,
    open_loopback_server,
    open_memory_server,
)

# --- the app's protocol -----------------------------------------------------------------------------------

ID = {"omit_if_default": True}


@attrs.frozen
class Enter:
    room: str
    status: str = "online"
    history: int | None = attrs.field(default=None, metadata=ID)
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class SetStatus:
    room: str
    status: str
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Say:
    text: str
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Crash:
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Quit:
    pass


@attrs.frozen
class Exit:
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Unhandled:
    pass


Inbound: TypeAlias = Enter | SetStatus | Say | Crash | Quit | Exit | Unhandled


@attrs.frozen
class Person:
    name: str
    status: str


def _people(people: Iterable[Person]) -> tuple[Person, ...]:
    return tuple(people)


@attrs.frozen
class Welcome:
    members: tuple[Person, ...] = attrs.field(converter=_people)
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Arrived:
    name: str
    status: str


@attrs.frozen
class Changed:
    name: str
    status: str


@attrs.frozen
class Departed:
    name: str
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


@attrs.frozen
class Said:
    from_: str
    text: str


@attrs.frozen
class Done:
    id: MessageId | None = attrs.field(default=None, metadata=ID)


@attrs.frozen
class Failed:
    reason: str
    id: MessageId | None = attrs.field(default=None, metadata=ID, kw_only=True)


Outbound: TypeAlias = Welcome | Arrived | Changed | Departed | Said | Done | Failed
INBOUND: trionos.Codec[Inbound] = trionos.Codec(Inbound)
OUTBOUND: trionos.Codec[Outbound] = trionos.Codec(Outbound)


# --- the app ----------------------------------------------------------------------------------------------


@attrs.frozen
class User:
    """Who the connect hook says a connection is, and the rooms it may enter."""

    name: str
    rooms: frozenset[str]


#: Session tokens (as a cookie) -> users; a real app would look them up or verify a signature.
USERS = {
    "t-ann": User("ann", frozenset({"tea", "lobby"})),
    "t-bob": User("bob", frozenset({"tea", "lobby"})),
    "t-mal": User("mal", frozenset({"lobby"})),
}
CHALLENGE = ("WWW-Authenticate", 'Cookie realm="test"')


async def authenticate(request: trionos.Request) -> User:
    """The connect hook: the ``session`` cookie names the user; anything else is refused with 401."""
    user = USERS.get(request.cookies.get("session", ""))
    if user is None:
        raise trionos.Reject(401, "log in first", headers=[CHALLENGE])
    return user


Session: TypeAlias = trionos.Session[User, Outbound]


async def may_enter(session: Session, room: str, message: object) -> None:
    """The join hook: a user enters only the rooms its token lists."""
    assert isinstance(message, Enter)
    if room not in session.state.rooms:
        raise trionos.Refuse(f"{session.state.name} may not enter {room!r}")


def status(member: trionos.Member) -> str:
    return str(member.meta.get("status", ""))


app = trionos.Channels(
    INBOUND,
    OUTBOUND,
    error=Failed,
    connect=authenticate,
    authorize=may_enter,
    joined=lambda m: Arrived(m.name or "", status(m)),
    left=lambda m: Departed(m.name or ""),
    updated=lambda m: Changed(m.name or "", status(m)),
)


@app.on(Enter)
async def enter(session: Session, message: Enter) -> None:
    await session.join(
        message.room,
        name=session.state.name,
        meta={"status": message.status},
        history=message.history,
        welcome=lambda j: Welcome(Person(m.name or "", status(m)) for m in j.members),
    )


@app.on(SetStatus)
async def set_status(session: Session, message: SetStatus) -> None:
    session.update(message.room, {"status": message.status})
    await session.reply(Done())


@app.on(Say)
async def say(session: Session, message: Say) -> None:
    if session.room is None:
        raise trionos.Refuse("enter a room first")
    await session.broadcast(session.room, Said(session.state.name, message.text))
    if message.id is not None:
        await session.reply(Done())


@app.on(Crash)
async def crash(session: Session, message: Crash) -> None:
    raise RuntimeError("a bug in the handler")


@app.on(Quit)
async def quit_(session: Session, message: Quit) -> None:
    raise trionos.CloseConnection(4000, "bye")


@app.on(Exit)
async def exit_(session: Session, message: Exit) -> None:
    if not await session.leave():
        raise trionos.Refuse("not in a room")


def cookie(token: str) -> dict[str, Any]:
    """The client settings that send ``token`` as the session cookie."""
    return {"extra_headers": [("Cookie", f"theme=dark; session={token}")]}


@asynccontextmanager
async def served(hub_options: dict[str, Any] | None = None) -> AsyncIterator[trionos.testing.MemoryServer]:
    """The app on a fresh hub, over memory pipes (heartbeats off: the tests drive time)."""
    async with (
        app.new_hub(**(hub_options or {})) as hub,
        open_memory_server(app.handler(hub), heartbeat=None) as server,
    ):
        yield server


async def expect(ws: trionos.WebSocket, message: Outbound) -> None:
    await expect_message(ws, message, codec=OUTBOUND)


async def both(ws: trionos.WebSocket) -> set[Outbound]:
    """The next two messages, in either order (a reply is written directly; a diff goes through the room)."""
    return {await expect_message(ws, object, codec=OUTBOUND) for _ in range(2)}


async def send(ws: trionos.WebSocket, message: Inbound) -> None:
    await ws.send_message(message, INBOUND)


# --- connect ----------------------------------------------------------------------------------------------


async def test_a_refused_connect_reaches_the_client_with_its_status_headers_and_body() -> None:
    """Over a real socket: no or a wrong cookie gets 401 with WWW-Authenticate; a good one connects."""
    async with app.lifespan() as handler, open_loopback_server(handler) as server:
        for settings in ({}, cookie("t-nobody")):
            with pytest.raises(trionos.ConnectionRejected) as refused:
                async with trionos.connect(server.url, **settings):
                    pass  # pragma: no cover (refused before the block)
            assert refused.value.status_code == 401
            assert refused.value.body == b"log in first"
            assert ("www-authenticate", CHALLENGE[1]) in [(n.lower(), v) for n, v in refused.value.headers]
        async with trionos.connect(server.url, **cookie("t-ann")) as ann:
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))


def test_cookies_are_parsed_from_every_cookie_header_and_bad_ones_are_skipped() -> None:
    """Request.cookies' parser: quoted values, several headers (later wins), a malformed header skipped."""
    from trionos._http import parse_cookies

    assert parse_cookies(['a=1; b="two words"', "a=3", "bad cookie;;=", "c=x"]) == {
        "a": "3",
        "b": "two words",
        "c": "x",
    }
    assert parse_cookies([]) == {}


# --- join ---------------------------------------------------------------------------------------------------


async def test_a_refused_join_tells_the_joiner_why_and_nobody_else() -> None:
    """The join hook's reason reaches mal with its message id; mal is in no room and ann hears nothing."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann, server.connect(**cookie("t-mal")) as mal:
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))
            await send(mal, Enter("tea", id="j1"))
            await expect(mal, Failed("mal may not enter 'tea'", id="j1"))
            await send(mal, Say("hello?", id=2))
            await expect(mal, Failed("enter a room first", id=2))
            await expect_silence(ann, timeout=0.05)
            # mal may still enter what it is allowed to.
            await send(mal, Enter("lobby"))
            await expect(mal, Welcome([Person("mal", "online")]))
            await expect_silence(ann, timeout=0.05)


# --- presence ---------------------------------------------------------------------------------------------


async def test_presence_metadata_snapshot_and_diffs_on_one_node() -> None:
    """The welcome lists members with metadata; joins, updates and leaves reach the others as diffs."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann:
            await send(ann, Enter("tea", "busy"))
            await expect(ann, Welcome([Person("ann", "busy")]))
            async with server.connect(**cookie("t-bob")) as bob:
                await send(bob, Enter("tea", "away", id=1))
                await expect(bob, Welcome([Person("ann", "busy"), Person("bob", "away")], id=1))
                await expect(ann, Arrived("bob", "away"))
                await send(bob, SetStatus("tea", "here", id="s"))
                await expect(ann, Changed("bob", "here"))
                assert await both(bob) == {Changed("bob", "here"), Done("s")}
                await send(bob, Exit(id=9))
                await expect(bob, Departed("bob", id=9))
                await expect(ann, Departed("bob"))
                await send(bob, Enter("tea"))
                await expect(bob, Welcome([Person("ann", "busy"), Person("bob", "online")]))
                await expect(ann, Arrived("bob", "online"))
            await expect(ann, Departed("bob"))  # the connection ended: no app code says so
            await expect_silence(ann, timeout=0.05)


async def test_a_join_of_the_room_one_is_in_keeps_the_membership() -> None:
    """Entering the room again (a client recovering a gap) is welcomed; the others hear nothing,
    or only an update when the metadata changed."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann, server.connect(**cookie("t-bob")) as bob:
            await send(ann, Enter("tea", "busy"))
            await expect(ann, Welcome([Person("ann", "busy")]))
            await send(bob, Enter("tea", "away"))
            await expect(bob, Welcome([Person("ann", "busy"), Person("bob", "away")]))
            await expect(ann, Arrived("bob", "away"))
            await send(bob, Enter("tea", "away", id="again"))
            await expect(bob, Welcome([Person("ann", "busy"), Person("bob", "away")], id="again"))
            await expect_silence(ann, timeout=0.05)
            await send(bob, Enter("tea", "here"))
            await expect(ann, Changed("bob", "here"))
            welcome = Welcome([Person("ann", "busy"), Person("bob", "here")])
            assert await both(bob) == {Changed("bob", "here"), welcome}
            await expect_silence(ann, timeout=0.05)


async def test_presence_metadata_and_diffs_across_two_nodes(redis: str, prefix: str) -> None:
    """Two hubs on one Redis: the welcome on one lists the other's members with their metadata, and
    joins, updates and leaves on either reach the other's members."""

    def node() -> trionos.Hub:
        return app.new_hub(broker=trionos.RedisBroker(redis, prefix=prefix))

    async with (
        node() as a,
        node() as b,
        open_memory_server(app.handler(a), heartbeat=None) as server_a,
        open_memory_server(app.handler(b), heartbeat=None) as server_b,
    ):
        async with server_a.connect(**cookie("t-ann")) as ann:
            await send(ann, Enter("tea", "busy"))
            await expect(ann, Welcome([Person("ann", "busy")]))
            async with server_b.connect(**cookie("t-bob")) as bob:
                await send(bob, Enter("tea", "away"))
                await expect(bob, Welcome([Person("ann", "busy"), Person("bob", "away")]))
                await expect_message(ann, Arrived("bob", "away"), codec=OUTBOUND, timeout=5)
                await send(bob, SetStatus("tea", "here"))
                assert await both(bob) == {Changed("bob", "here"), Done()}
                await expect_message(ann, Changed("bob", "here"), codec=OUTBOUND, timeout=5)
                await send(ann, Say("hi bob"))
                await expect_message(bob, Said("ann", "hi bob"), codec=OUTBOUND, timeout=5)
            await expect_message(ann, Departed("bob"), codec=OUTBOUND, timeout=5)


# --- acknowledgements and errors --------------------------------------------------------------------------


async def test_an_acknowledged_message_and_an_acknowledged_error() -> None:
    """A message with an id gets its reply with the id, an error it causes too; without an id, as before."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann, server.connect(**cookie("t-bob")) as bob:
            await send(ann, Say("too early", id="m1"))
            await expect(ann, Failed("enter a room first", id="m1"))
            await send(ann, Say("too early"))
            await expect(ann, Failed("enter a room first"))
            for ws in (ann, bob):
                await send(ws, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))
            await expect(bob, Welcome([Person("ann", "online"), Person("bob", "online")]))
            await expect(ann, Arrived("bob", "online"))
            await send(ann, Say("hi", id=41))
            await expect(ann, Done(41))
            await expect(bob, Said("ann", "hi"))
            await send(ann, Say("again"))
            await expect(bob, Said("ann", "again"))
            await expect_silence(ann, timeout=0.05)  # no id: no ack
            await ann.send('{"type":"say"}')
            reply = await expect_message(ann, Failed, codec=OUTBOUND)
            assert reply.id is None and "missing field 'text'" in reply.reason
            await send(ann, Unhandled())
            await expect(ann, Failed("Unhandled messages are not handled here"))


async def test_a_handler_exception_is_logged_and_answered_and_the_connection_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler's bug is logged with its traceback and answered with an error carrying the id."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann:
            with caplog.at_level(logging.ERROR, logger="trionos.channels"):
                await send(ann, Crash(id=5))
                await expect(ann, Failed("internal error", id=5))
            assert "a bug in the handler" in caplog.text
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))


async def test_a_handler_may_close_the_connection_and_the_room_is_told() -> None:
    """CloseConnection closes with its code and reason; the room gets the member's departure."""
    async with served() as server:
        async with server.connect(**cookie("t-ann")) as ann, server.connect(**cookie("t-bob")) as bob:
            for ws in (ann, bob):
                await send(ws, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))
            await expect(bob, Welcome([Person("ann", "online"), Person("bob", "online")]))
            await expect(ann, Arrived("bob", "online"))
            await send(bob, Quit())
            closed = await expect_closed(bob)
            assert (closed.code, closed.reason) == (4000, "bye")
            await expect(ann, Departed("bob"))


async def test_the_rate_limit_applies_before_dispatch_and_keeps_the_id(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Over the hub's limit a message is refused with the app's error, carrying its id; it never runs."""
    async with served({"rate_limit": trionos.RateLimit(rate=1.0, burst=1)}) as server:
        async with server.connect(**cookie("t-ann")) as ann:
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))
            await send(ann, Crash(id="x"))
            await expect(ann, Failed("too many messages: slow down", id="x"))
            await ann.send("{")
            await expect(ann, Failed("too many messages: slow down"))
            await trio.sleep(1.0)
            await send(ann, Crash(id="y"))
            await expect(ann, Failed("internal error", id="y"))


async def test_a_join_with_history_gets_the_rooms_last_messages() -> None:
    """``history=N`` on join: the welcome, then the room's last N messages, then live traffic."""
    async with served({"history": True}) as server:
        async with server.connect(**cookie("t-ann")) as ann:
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))
            for text in ("one", "two", "three"):
                await send(ann, Say(text))
            async with server.connect(**cookie("t-bob")) as bob:
                await send(bob, Enter("tea", history=2, id="h"))
                await expect(bob, Welcome([Person("ann", "online"), Person("bob", "online")], id="h"))
                await expect_message(bob, {"type": "said", "from": "ann", "text": "two", "offset": 2})
                await expect_message(bob, {"type": "said", "from": "ann", "text": "three", "offset": 3})
                await send(ann, Say("four"))
                await expect_message(bob, {"type": "said", "from": "ann", "text": "four", "offset": 4})
                await send(bob, Enter("tea", history=-1, id="bad"))
                await expect(bob, Failed("history must be a count of at least 0, got -1", id="bad"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(malformed_payloads(INBOUND), min_size=1, max_size=4))
def test_undecodable_input_never_reaches_a_handler_and_the_connection_stays(payloads: list[str]) -> None:
    """Any payload the inbound codec refuses is answered with the app's error (no id), and the
    connection goes on: a valid message after them is handled."""

    async def check() -> None:
        async with served() as server, server.connect(**cookie("t-ann")) as ann:
            for payload in payloads:
                await ann.send(payload)
                reply = await expect_message(ann, Failed, codec=OUTBOUND)
                assert reply.id is None and reply.reason != "internal error"
            await send(ann, Enter("tea"))
            await expect(ann, Welcome([Person("ann", "online")]))

    trio.run(check)


# --- the application object -------------------------------------------------------------------------------


async def test_the_app_is_ready_only_while_its_lifespan_runs_its_hub() -> None:
    """ready() is False before and after lifespan, True inside it (with a hub that needs no broker)."""
    assert not app.ready()
    async with app.lifespan():
        assert app.ready()
    assert not app.ready()


def test_declarations_are_checked_where_they_are_made() -> None:
    """A second handler for one class and an unknown setting for replace() raise at once."""
    with pytest.raises(ValueError, match="Enter already has a handler"):
        app.on(Enter)(enter)
    with pytest.raises(TypeError, match="Channels has no setting 'colour'"):
        app.replace(colour="blue")  # type: ignore[call-arg]  # the check at run time, for untyped callers
    other = app.replace(rate_limited="calm down")
    assert other.rate_limited == "calm down" and app.rate_limited == "too many messages: slow down"
    assert "Enter" in repr(app)
