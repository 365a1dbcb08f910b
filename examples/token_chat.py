"""Token chat: a room chat whose users prove who they are with signed, short-lived tokens.

``python examples/token_chat.py --secret S [--host H] [--port P] [--token-seconds N]
[--allow-origin https://chat.example]`` serves; ``python examples/token_chat.py --secret S --issue
ann --rooms lobby,dev`` prints a token for ann that lets her into ``lobby``, ``dev`` and her own
room ``@ann``. With the command: ``TOKEN_CHAT_SECRET=S trionos examples.token_chat:app``.

* The token is an itsdangerous ``URLSafeTimedSerializer`` signature of ``{"user", "rooms"}``: the
  server keeps no session table, and a token is refused once it is older than ``--token-seconds``
  (default 300): a leaked one is worth little for long.
* The client sends it as ``Authorization: Bearer <token>`` (programs), or as the ``token`` cookie
  (browsers, which cannot set headers on a WebSocket), accepted only from a page whose ``Origin``
  is one of ``--allow-origin``. Never in the URL: query strings end up in proxy and access logs.
* No or a bad token: HTTP 401 with ``WWW-Authenticate: Bearer`` (and ``error="invalid_token"`` when
  one was sent); a cookie from another origin: 403.
* Client -> server: ``join`` (``room``, optional ``history``: the last N messages), ``chat``
  (``room``, ``text``), ``leave`` (``room``); each may carry an ``id``, echoed on its answer.
* Server -> client: ``welcome`` (the room and its users), ``joined``/``left`` (presence),
  ``message`` (with the server's ``time``), ``ack`` and ``error``. A user may be in several rooms;
  a join outside the token's rooms is refused with a reason.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from typing import TypeAlias

import attrs
import itsdangerous

import trionos
from trionos.chat import MessageId

# --- the protocol --------------------------------------------------------------------------------

_OPTIONAL = {"omit_if_default": True}


@attrs.frozen
class Join:
    room: str
    history: int | None = attrs.field(default=None, metadata=_OPTIONAL)
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Chat:
    room: str
    text: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Leave:
    room: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


def _names(users: Iterable[str]) -> tuple[str, ...]:
    return tuple(users)


@attrs.frozen
class Welcome:
    room: str
    users: tuple[str, ...] = attrs.field(converter=_names)
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Joined:
    room: str
    user: str


@attrs.frozen
class Left:
    room: str
    user: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Message:
    room: str
    from_: str
    text: str
    time: int
    offset: int | None = attrs.field(default=None, metadata=_OPTIONAL)


@attrs.frozen
class Ack:
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL)
    time: int | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Error:
    reason: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


ClientMessage: TypeAlias = Join | Chat | Leave
ServerMessage: TypeAlias = Welcome | Joined | Left | Message | Ack | Error
CLIENT_CODEC: trionos.Codec[ClientMessage] = trionos.Codec(ClientMessage)
SERVER_CODEC: trionos.Codec[ServerMessage] = trionos.Codec(ServerMessage)

# --- tokens --------------------------------------------------------------------------------------


@attrs.frozen
class User:
    """Who a token says the connection is, and the rooms it may join."""

    name: str
    rooms: frozenset[str]

    def may_join(self, room: str) -> bool:
        return room in self.rooms or room == f"@{self.name}"


def serializer(secret: str) -> itsdangerous.URLSafeTimedSerializer:
    """Signs and checks tokens with *secret* (salted, so a token of another app never passes here)."""
    return itsdangerous.URLSafeTimedSerializer(secret, salt="trionos.token_chat")


def issue(signer: itsdangerous.URLSafeTimedSerializer, user: str, rooms: Iterable[str]) -> str:
    """A token for *user*, valid for *rooms* (and ``@user``), timestamped now."""
    return signer.dumps({"user": user, "rooms": sorted(rooms)})


def unauthorized(error: str | None = None) -> trionos.Reject:
    """401 with the RFC 6750 challenge (``error="invalid_token"`` when a token came and failed)."""
    challenge = 'Bearer realm="token_chat"' + (
        f', error="invalid_token", error_description="{error}"' if error else ""
    )
    return trionos.Reject(401, error or "a token is required", headers=[("WWW-Authenticate", challenge)])


# --- the app -------------------------------------------------------------------------------------


def make_app(
    secret: str, *, max_age: int = 300, origins: Iterable[str] = ()
) -> trionos.Channels[User, ClientMessage, ServerMessage]:
    """The token chat for *secret*: tokens older than *max_age* seconds are refused; the ``token``
    cookie is accepted only from pages served by *origins*."""
    signer, allowed = serializer(secret), frozenset(origins)

    async def authenticate(request: trionos.Request) -> User:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.cookies.get("token", "")
            if token and request.headers.get("origin") not in allowed:
                raise trionos.Reject(403, "cookie from a page of another origin")
        if not token:
            raise unauthorized()
        try:
            claims = signer.loads(token, max_age=max_age)
        except itsdangerous.SignatureExpired:
            raise unauthorized("token expired") from None
        except itsdangerous.BadData:
            raise unauthorized("bad token") from None
        return User(str(claims["user"]), frozenset(map(str, claims["rooms"])))

    async def authorize(session: Session, room: str, message: object) -> None:
        if not session.state.may_join(room):
            raise trionos.Refuse(f"{session.state.name} may not join {room!r}")

    channels: trionos.Channels[User, ClientMessage, ServerMessage]
    channels = trionos.Channels(
        CLIENT_CODEC,
        SERVER_CODEC,
        error=Error,
        connect=authenticate,
        authorize=authorize,
        joined=lambda m: Joined(m.room, m.name or ""),
        left=lambda m: Left(m.room, m.name or ""),
        hub=lambda: channels.new_hub(history=trionos.HistoryBounds(max_messages=100, max_age=3600.0)),
    )
    channels.on(Join)(join)
    channels.on(Chat)(chat)
    channels.on(Leave)(leave)
    return channels


Session: TypeAlias = trionos.Session[User, ServerMessage]


async def join(session: Session, message: Join) -> None:
    await session.join(
        message.room,
        name=session.state.name,
        identity=session.state.name,
        history=message.history,
        welcome=lambda j: Welcome(j.room, j.names),
    )


async def chat(session: Session, message: Chat) -> None:
    if message.room not in session.rooms:
        raise trionos.Refuse(f"join {message.room!r} first")
    now = time.time_ns() // 1_000_000
    await session.broadcast(message.room, Message(message.room, session.state.name, message.text, now))
    if message.id is not None:
        await session.reply(Ack(time=now))


async def leave(session: Session, message: Leave) -> None:
    if not await session.leave(message.room):
        raise trionos.Refuse(f"not in {message.room!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Room chat with signed, short-lived tokens.")
    parser.add_argument("--secret", default=os.environ.get("TOKEN_CHAT_SECRET"), help="the signing key")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--token-seconds", type=int, default=300, help="how long a token is valid (300)")
    parser.add_argument(
        "--allow-origin", action="append", default=[], help="an Origin whose pages may use the cookie"
    )
    parser.add_argument("--issue", metavar="USER", help="print a token for USER and exit")
    parser.add_argument("--rooms", default="lobby", help="with --issue: the rooms, comma-separated (lobby)")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or TOKEN_CHAT_SECRET) is required")
    return args


def _no_secret() -> trionos.Hub:
    raise RuntimeError("examples.token_chat:app needs its signing key in TOKEN_CHAT_SECRET")


#: What ``TOKEN_CHAT_SECRET=S trionos examples.token_chat:app`` serves; without the variable it
#: refuses to start (the runner exits with status 1 and that message, before listening).
_SECRET = os.environ.get("TOKEN_CHAT_SECRET")
app = make_app(_SECRET) if _SECRET else make_app("-").replace(hub=_no_secret)


def main() -> None:
    args = parse_args()
    if args.issue:
        print(issue(serializer(args.secret), args.issue, args.rooms.split(",")))
        return
    trionos.run(
        make_app(args.secret, max_age=args.token_seconds, origins=args.allow_origin),
        host=args.host,
        port=args.port,
    )


if __name__ == "__main__":
    main()
