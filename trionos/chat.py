"""The chat protocol: what a chat client and a chat server (``examples/room_chat.py``) say to each other.

Every message is one JSON object in a WebSocket text frame, tagged by ``"type"``::

    client -> server   {"type":"join","username":"ann","room":"lobby"}
                       {"type":"join","username":"ann","room":"lobby","since":{"epoch":"9f2c","offset":41}}
                       {"type":"join","username":"ann","room":"lobby","history":20,"id":1}
                       {"type":"chat","text":"hi"}
                       {"type":"chat","text":"hi","id":"m7"}
                       {"type":"leave"}
    server -> client   {"type":"welcome","users":["ann","bob"]}
                       {"type":"welcome","users":["ann","bob"],"epoch":"9f2c","offset":44,"recovered":true}
                       {"type":"joined","username":"bob"}
                       {"type":"message","from":"ann","text":"hi"}
                       {"type":"message","from":"ann","text":"hi","time":1796601600000,"epoch":"9f2c","offset":45}
                       {"type":"ack","id":"m7","offset":45,"time":1796601600000}
                       {"type":"left","username":"bob"}
                       {"type":"error","reason":"join a room first"}
                       {"type":"error","reason":"join a room first","id":"m7"}

Unknown fields are ignored, so either side can add fields without breaking the other. Use
:data:`~trionos.chat.CLIENT_CODEC` and :data:`~trionos.chat.SERVER_CODEC` to encode and decode; they raise
:exc:`~trionos.DecodeError` for any payload that is not one of these messages.

**History and recovery** (optional fields; absent when not in use, so a peer that never uses them
sees exactly the messages above). When the room keeps a history, each ``message`` carries its
``offset`` (one more per chat message in the room) and ``epoch`` (the room's history's, so a live
client sees a restart at once; the room chat sends it) and ``welcome`` carries the room's ``epoch``
and latest ``offset``. A client that comes back sends ``join`` with ``since`` (the epoch and the
offset of the last message it saw); the server answers ``welcome`` with ``recovered`` (true when
nothing was lost, false when the history no longer reaches back that far or the epoch changed),
then every missed ``message`` with a larger offset, in order and as first sent, then live
traffic. Only chat messages are history; ``joined``/``left`` are presence and are not replayed
(the welcome lists who is there now). A ``join`` with ``history`` (a count, without ``since``)
gets the last ``history`` messages of the room after ``welcome``, oldest first, then live traffic,
with the same seam: no gap, no duplicate.

**Acknowledgements** (optional): ``join``, ``chat`` and ``leave`` may carry an ``id`` (a string or
an integer, echoed verbatim). A chat with an id that was broadcast is answered with ``ack``
(``offset`` with history, and ``time``); the ``welcome`` or ``left`` a join or leave caused, and
any ``error`` a message caused, carry its id. A message without an id is answered as before.

**Names**: a ``join``'s ``username`` and ``room`` are compared and shown as
:func:`~trionos.chat.normalize_name` makes them: NFKC, surrounding whitespace trimmed and inner
runs made one space, with no control or format character (``\\u200b``, ``\\u202e``, NUL...), no
mix of Latin, Greek and Cyrillic letters (a Cyrillic ``a``, U+0430, in ``alice``), and at most
:data:`~trionos.chat.MAX_USERNAME_BYTES` (64) and :data:`~trionos.chat.MAX_ROOM_BYTES` (128)
bytes of UTF-8. A join that breaks a rule is answered with an ``error`` saying which.

**Time**: ``message`` carries ``time``, the server's clock when it accepted the chat, in integer
milliseconds since the Unix epoch (UTC); a replayed message keeps its original time.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import TypeAlias, Union

import attrs

from ._codec import Codec
from ._history import Position as _Position
from ._metrics import Metrics as _Metrics
from ._wire import OMIT_IF_DEFAULT

__all__ = [
    "Ack",
    "CLIENT_CODEC",
    "Chat",
    "ClientMessage",
    "Error",
    "InvalidName",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "MAX_ROOM_BYTES",
    "MAX_USERNAME_BYTES",
    "Message",
    "MessageId",
    "SERVER_CODEC",
    "ServerMessage",
    "Welcome",
    "normalize_name",
]

#: Optional protocol fields are left out of the JSON while they hold their default (None).
_OPTIONAL = {OMIT_IF_DEFAULT: True}

#: What a client may tag a message with (``"id"``): a string or an integer, echoed verbatim.
#: (``Union``: a runtime alias the codec reads, which ``str | int`` would also be from 3.10 on.)
MessageId: TypeAlias = Union[str, int]  # noqa: UP007


#: The longest ``username`` a join may carry, in bytes of UTF-8 after :func:`normalize_name`.
MAX_USERNAME_BYTES = 64
#: The longest ``room`` a join may carry, in bytes of UTF-8 after :func:`normalize_name`.
MAX_ROOM_BYTES = 128
#: Scripts whose letters look alike: a name mixing two of them is refused.
_CONFUSABLE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC"})


class InvalidName(ValueError):
    """A name :func:`normalize_name` refuses; the message says which rule it breaks.

    Args:
        message: what is wrong, for the client.
        reason: the rule, one of the class's constants (the ``reason`` label of
            :attr:`Metrics.names_refused <trionos.Metrics.names_refused>`).
    """

    #: Longer than the limit.
    TOO_LONG = "too_long"
    #: Mixes letters of scripts that look alike (Latin, Greek, Cyrillic).
    LOOK_ALIKE = "look_alike"
    #: Empty once trimmed, or holds a control, format, separator, private-use or unassigned character.
    INVALID = "invalid"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        #: The rule it breaks: :attr:`TOO_LONG`, :attr:`LOOK_ALIKE` or :attr:`INVALID`.
        self.reason = reason


def normalize_name(
    value: str, *, what: str = "username", limit: int = MAX_USERNAME_BYTES, metrics: _Metrics | None = None
) -> str:
    """*value* as the chat protocol compares and shows it, or a precise refusal.

    NFKC (fullwidth ``alice``, U+FF41..., is ``alice``), trimmed, inner whitespace runs made one
    space. Pure: no I/O.

    Args:
        value: the name a client sent.
        what: what it names, for the error (``"username"``, ``"room"``).
        limit: the most bytes of UTF-8 it may have once normalised.
        metrics: where a refusal is counted, by its reason (:attr:`Metrics.names_refused
            <trionos.Metrics.names_refused>`; never the name itself).

    Returns:
        The normalised name.

    Raises:
        InvalidName: (a :exc:`ValueError`) it is empty once trimmed, longer than *limit*, holds
            a control, format, separator, private-use or unassigned character, or mixes Latin,
            Greek and Cyrillic letters. The message says which, with the character's code point.
    """
    try:
        return _normalized(value, what, limit)
    except InvalidName as exc:
        if metrics is not None:
            metrics.names_refused[exc.reason] = metrics.names_refused.get(exc.reason, 0) + 1
        raise


def _normalized(value: str, what: str, limit: int) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > 4 * limit:  # refused before any work proportional to a huge name
        raise InvalidName(f"{what} is {size} bytes long; the limit is {limit}", InvalidName.TOO_LONG)
    name = " ".join(unicodedata.normalize("NFKC", value).split())
    if not name:
        raise InvalidName(f"{what} must not be empty", InvalidName.INVALID)
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidName(f"{what} is {size} bytes long; the limit is {limit}", InvalidName.TOO_LONG)
    scripts = set()
    for char in name:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise InvalidName(
                f"{what} must not contain U+{ord(char):04X} (a {category} character)", InvalidName.INVALID
            )
        if category[0] == "L":
            script = unicodedata.name(char, "").partition(" ")[0]
            if script in _CONFUSABLE_SCRIPTS:
                scripts.add(script)
    if len(scripts) > 1:
        mixed = " and ".join(s.title() for s in sorted(scripts))
        raise InvalidName(f"{what} must not mix {mixed} letters", InvalidName.LOOK_ALIKE)
    return name


# -- client -> server --------------------------------------------------------------------------------------


@attrs.frozen
class Join:
    """Enter ``room`` as ``username``; the server answers with :class:`~trionos.chat.Welcome`.

    With ``since`` (a :class:`~trionos.Position`: the epoch and offset of the last message seen),
    the server replays what was missed; with ``history`` instead, the last ``history`` messages.
    ``id`` comes back on the welcome (or the error).
    """

    username: str
    room: str = "lobby"
    since: _Position | None = attrs.field(default=None, metadata=_OPTIONAL)
    history: int | None = attrs.field(default=None, metadata=_OPTIONAL)
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Chat:
    """Say ``text`` to everyone in the room; with an ``id``, the answer is :class:`Ack` or :class:`Error`."""

    text: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Leave:
    """Leave the room; the connection stays open. ``id`` comes back on the :class:`Left`."""

    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


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
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Joined:
    """Someone else entered the room."""

    username: str


@attrs.frozen
class Message:
    """``from_`` said ``text`` (the field is ``"from"`` on the wire); ``offset`` with history.

    ``epoch`` (with history, when the server stamps it) names the history the offset belongs to:
    a live client sees at once that the room's history restarted (its offsets start again).

    ``time`` is when the server accepted it (integer milliseconds since the Unix epoch, UTC).
    """

    from_: str
    text: str
    offset: int | None = attrs.field(default=None, metadata=_OPTIONAL)
    time: int | None = attrs.field(default=None, metadata=_OPTIONAL)
    #: The epoch of the room's history the offset belongs to (a server with ``Hub(epoch_field=)``).
    epoch: str | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Ack:
    """The chat with this ``id`` was accepted and broadcast: its ``offset`` (with history) and ``time``."""

    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL)
    offset: int | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)
    time: int | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Left:
    """Someone left the room (or their connection ended); to the leaver, with its leave's ``id``."""

    username: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


@attrs.frozen
class Error:
    """The server could not act on a client message; ``reason`` says why, ``id`` which message."""

    reason: str
    id: MessageId | None = attrs.field(default=None, metadata=_OPTIONAL, kw_only=True)


ClientMessage: TypeAlias = Join | Chat | Leave
ServerMessage: TypeAlias = Welcome | Joined | Message | Ack | Left | Error

#: Encodes what clients send and decodes it on the server.
CLIENT_CODEC: Codec[ClientMessage] = Codec(ClientMessage)
#: Encodes what the server sends and decodes it on clients.
SERVER_CODEC: Codec[ServerMessage] = Codec(ServerMessage)
