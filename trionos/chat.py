"""The seed chat protocol: what a chat client and a chat server say to each other.

Every message is one JSON object in a WebSocket text frame, tagged by ``"type"``::

    client -> server   {"type":"join","username":"ann","room":"lobby"}
                       {"type":"chat","text":"hi"}
                       {"type":"leave"}
    server -> client   {"type":"welcome","users":["ann","bob"]}
                       {"type":"joined","username":"bob"}
                       {"type":"message","from":"ann","text":"hi"}
                       {"type":"left","username":"bob"}
                       {"type":"error","reason":"join a room first"}

Unknown fields are ignored, so either side can add fields without breaking the other. Use
:data:`CLIENT_CODEC` and :data:`SERVER_CODEC` to encode and decode; they raise
:exc:`~trionos.DecodeError` for any payload that is not one of these messages.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ._codec import Codec

__all__ = [
    "CLIENT_CODEC",
    "Chat",
    "ClientMessage",
    "Error",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "Message",
    "SERVER_CODEC",
    "ServerMessage",
    "Welcome",
]


# -- client -> server --------------------------------------------------------------------------------------


@attrs.frozen
class Join:
    """Enter ``room`` as ``username``; the server answers with :class:`Welcome`."""

    username: str
    room: str = "lobby"


@attrs.frozen
class Chat:
    """Say ``text`` to everyone in the room."""

    text: str


@attrs.frozen
class Leave:
    """Leave the room; the connection stays open."""


# -- server -> client --------------------------------------------------------------------------------------


@attrs.frozen
class Welcome:
    """Sent to a client that joined: who is in the room now, itself included.

    ``users`` takes any iterable of names (``Welcome(sorted(room))``) and keeps a tuple, so that
    a Welcome built in code equals the one decoded from the wire.
    """

    users: tuple[str, ...] = attrs.field(converter=tuple)


@attrs.frozen
class Joined:
    """Someone else entered the room."""

    username: str


@attrs.frozen
class Message:
    """``from_`` said ``text`` (the field is ``"from"`` on the wire)."""

    from_: str
    text: str


@attrs.frozen
class Left:
    """Someone left the room (or their connection ended)."""

    username: str


@attrs.frozen
class Error:
    """The server could not act on the last client message; ``reason`` says why."""

    reason: str


ClientMessage: TypeAlias = Join | Chat | Leave
ServerMessage: TypeAlias = Welcome | Joined | Message | Left | Error

#: Encodes what clients send and decodes it on the server.
CLIENT_CODEC: Codec[ClientMessage] = Codec(ClientMessage)
#: Encodes what the server sends and decodes it on clients.
SERVER_CODEC: Codec[ServerMessage] = Codec(ServerMessage)
