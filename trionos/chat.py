"""The chat protocol: what a chat client and a chat server (``examples/room_chat.py``) say to each other.

Every message is one JSON object in a WebSocket text frame, tagged by ``"type"``::

    client -> server   {"type":"join","username":"ann","room":"lobby"}
                       {"type":"join","username":"ann","room":"lobby","since":{"epoch":"9f2c","offset":41}}
                       {"type":"chat","text":"hi"}
                       {"type":"leave"}
    server -> client   {"type":"welcome","users":["ann","bob"]}
                       {"type":"welcome","users":["ann","bob"],"epoch":"9f2c","offset":44,"recovered":true}
                       {"type":"joined","username":"bob"}
                       {"type":"message","from":"ann","text":"hi"}
                       {"type":"message","from":"ann","text":"hi","offset":45}
                       {"type":"left","username":"bob"}
                       {"type":"error","reason":"join a room first"}

Unknown fields are ignored, so either side can add fields without breaking the other. Use
:data:`~trionos.chat.CLIENT_CODEC` and :data:`~trionos.chat.SERVER_CODEC` to encode and decode; they raise
:exc:`~trionos.DecodeError` for any payload that is not one of these messages.

**History and recovery** (optional fields; absent when not in use, so a peer that never uses them
sees exactly the messages above). When the room keeps a history, each ``message`` carries its
``offset`` (one more per chat message in the room) and ``welcome`` carries the room's ``epoch``
and latest ``offset``. A client that comes back sends ``join`` with ``since`` (the epoch and the
offset of the last message it saw); the server answers ``welcome`` with ``recovered`` (true when
nothing was lost, false when the history no longer reaches back that far or the epoch changed),
then every missed ``message`` with a larger offset, in order and as first sent, then live
traffic. Only chat messages are history; ``joined``/``left`` are presence and are not replayed
(the welcome lists who is there now).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import attrs

from ._codec import Codec
from ._history import Position as _Position
from ._wire import OMIT_IF_DEFAULT

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

#: Optional protocol fields are left out of the JSON while they hold their default (None).
_OPTIONAL = {OMIT_IF_DEFAULT: True}


# -- client -> server --------------------------------------------------------------------------------------


@attrs.frozen
class Join:
    """Enter ``room`` as ``username``; the server answers with :class:`~trionos.chat.Welcome`.

    With ``since`` (a :class:`~trionos.Position`: the epoch and offset of the last message seen),
    the server replays what was missed.
    """

    username: str
    room: str = "lobby"
    since: _Position | None = attrs.field(default=None, metadata=_OPTIONAL)


@attrs.frozen
class Chat:
    """Say ``text`` to everyone in the room."""

    text: str


@attrs.frozen
class Leave:
    """Leave the room; the connection stays open."""


# -- server -> client --------------------------------------------------------------------------------------


def _names(users: Iterable[str]) -> tuple[str, ...]:
    """Welcome's ``users`` as a tuple (a typed converter: ``converter=tuple`` types as ``Iterable[Any]``)."""
    return tuple(users)


@attrs.frozen
class Welcome:
    """Sent to a client that joined: who is in the room now, itself included.

    ``users`` takes any iterable of names (``Welcome(sorted(room))``) and keeps a tuple, so that
    a Welcome built in code equals the one decoded from the wire. With history, ``epoch`` and
    ``offset`` are the room's latest position, and ``recovered`` answers a join with ``since``.
    """

    users: tuple[str, ...] = attrs.field(converter=_names)
    epoch: str | None = attrs.field(default=None, metadata=_OPTIONAL)
    offset: int | None = attrs.field(default=None, metadata=_OPTIONAL)
    recovered: bool | None = attrs.field(default=None, metadata=_OPTIONAL)


@attrs.frozen
class Joined:
    """Someone else entered the room."""

    username: str


@attrs.frozen
class Message:
    """``from_`` said ``text`` (the field is ``"from"`` on the wire); ``offset`` with history."""

    from_: str
    text: str
    offset: int | None = attrs.field(default=None, metadata=_OPTIONAL)


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
