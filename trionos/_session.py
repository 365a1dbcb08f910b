"""The per-connection side of :class:`~trionos.Channels`: the session, its refusals, and joining.

A :class:`Session` is what every handler of one connection gets: the connection's typed state,
its rooms, and the ways to answer (``reply`` carries the id of the message being handled). The
exceptions here are how app code steers the framework: :exc:`Reject` refuses an upgrade,
:exc:`Refuse` answers a message with an error, :exc:`CloseConnection` ends the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._broker import Member
from ._errors import BrokerError, TrionosError
from ._history import Position, Recovery
from ._hub import Hub
from ._hub_client import Client, Sent

if TYPE_CHECKING:
    from ._channels import Channels

__all__ = [
    "INTERNAL_ERROR",
    "CloseConnection",
    "Joining",
    "MessageId",
    "Refuse",
    "Reject",
    "Session",
    "message_id",
]

S = TypeVar("S")  # the connection's state
O = TypeVar("O")  # noqa: E741 (the outbound union)

#: What a message id may be on the wire: a string or an integer, echoed verbatim.
MessageId = str | int

#: The reason sent for a handler's unexpected exception (the details go to the log, not the peer).
INTERNAL_ERROR = "internal error"


class Reject(TrionosError):
    """Raised by a ``connect`` hook: refuse the WebSocket upgrade with an HTTP response.

    The client sees :exc:`~trionos.ConnectionRejected` with this status, headers and body.

    Args:
        status: the HTTP status (401 asks for credentials, 403 refuses them).
        body: the response body.
        headers: more response headers, e.g. ``[("WWW-Authenticate", 'Bearer realm="chat"')]``.
    """

    def __init__(self, status: int = 403, body: str = "", *, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"upgrade refused with HTTP {status}: {body!r}")
        self.status = status
        self.body = body
        self.headers = tuple(headers)


class Refuse(TrionosError):
    """Raised by a handler or a ``join`` hook: answer the message with the app's error and do nothing else.

    Args:
        reason: what the client is told.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CloseConnection(TrionosError):
    """Raised by a handler: close the connection with this code and reason (after its goodbye).

    Args:
        code: the WebSocket close code (default 1008, policy violation).
        reason: the close reason.
    """

    def __init__(self, code: int = 1008, reason: str = "") -> None:
        super().__init__(f"close {code}: {reason!r}")
        self.code = code
        self.reason = reason


@attrs.frozen
class Joining:
    """What a welcome is made from: the room's members (the joiner last) and the history's answer.

    Args:
        room: the room joined.
        members: who is in the room now, on every node, in join order (the joiner last), as
            :class:`~trionos.Member` records with their metadata.
        recovery: with history, the room's position and what is replayed; None without history.
        since: the position the client asked to recover from (None: none asked).
    """

    room: str
    members: tuple[Member, ...]
    recovery: Recovery | None = None
    since: Position | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The members' names, in join order (members without a name are left out)."""
        return tuple(member.name for member in self.members if member.name is not None)

    @property
    def epoch(self) -> str | None:
        """The room history's epoch (None without history)."""
        return None if self.recovery is None else self.recovery.position.epoch

    @property
    def offset(self) -> int | None:
        """The room history's latest offset (None without history)."""
        return None if self.recovery is None else self.recovery.position.offset

    @property
    def recovered(self) -> bool | None:
        """With ``since``: whether nothing was lost (None when no recovery was asked for)."""
        return None if self.recovery is None or self.since is None else self.recovery.complete


def message_id(message: object) -> MessageId | None:
    """The id a client tagged *message* with (its ``id`` attribute), or None."""
    value: object = getattr(message, "id", None)
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def _with_id(message: O, message_id: MessageId | None) -> O:
    """*message* carrying *message_id*, when its class has an ``id`` field that is unset."""
    if message_id is None or not attrs.has(type(message)):
        return message
    cls: Any = type(message)
    if getattr(message, "id", 0) is not None or "id" not in attrs.fields_dict(cls):
        return message
    evolved: O = attrs.evolve(message, id=message_id)  # type: ignore[misc]
    return evolved


class Session(Generic[S, O]):
    """One connection served by :class:`Channels`: its state, its rooms, and how to answer it.

    Every handler of the connection gets the same session. Make one by serving a
    :class:`Channels`, not directly.

    Attributes:
        state: what the ``connect`` hook returned for this connection (the user).
        client: the hub's :class:`~trionos.Client` (its ``ws``, ``id``, ``name``, ``identity``).
        hub: the hub the connection is registered with.
    """

    def __init__(self, channels: Channels[S, Any, O], hub: Hub, client: Client, state: S) -> None:
        self.channels = channels
        self.hub = hub
        self.client = client
        self.state = state
        #: The message being handled (None between messages).
        self.message: object = None
        #: The id of the message being handled (None when it carried none).
        self.message_id: MessageId | None = None

    def __repr__(self) -> str:
        return f"<trionos.Session {self.client.id} rooms={self.rooms} state={self.state!r}>"

    @property
    def rooms(self) -> list[str]:
        """The rooms this connection is in, in the order it joined them."""
        return self.hub.rooms_of(self.client)

    @property
    def room(self) -> str | None:
        """The room this connection joined first (its only room with ``single_room``), or None."""
        rooms = self.hub.rooms_of(self.client)
        return rooms[0] if rooms else None

    @property
    def name(self) -> str | None:
        """This connection's name (the last it joined a room with), or None before it joined one."""
        return self.client.name

    async def send(self, message: O) -> None:
        """Send *message* to this connection (encoded with the outbound codec), as it is."""
        await self.client.ws.send_message(message, self.channels.outbound)

    async def reply(self, message: O) -> None:
        """Send *message* to this connection, carrying the id of the message being handled.

        The id goes into the message's ``id`` field when its class has one and it is unset.
        """
        await self.send(_with_id(message, self.message_id))

    async def error(self, reason: str) -> None:
        """Answer the message being handled with the app's error (carrying its id)."""
        await self.reply(self.channels.error(reason))

    async def broadcast(self, room: str, message: O, *, echo: bool = False, history: bool = True) -> Sent:
        """Send *message* to *room*'s members on every node, but this connection unless ``echo``.

        See :meth:`Hub.broadcast <trionos.Hub.broadcast>` (its waits, history and errors).

        Returns:
            What the hub's broadcast returns: the local recipients and the message's position.
        """
        return await self.hub.broadcast(room, message, exclude=None if echo else self.client, history=history)

    async def presence(self, room: str) -> list[Member]:
        """Who is in *room* now, on every node, in join order, with their metadata."""
        return await self.hub.presence_state(room)

    async def join(
        self,
        room: str,
        *,
        name: str,
        meta: Mapping[str, Any] | None = None,
        identity: str | None = None,
        since: Position | None = None,
        history: int | None = None,
        welcome: Callable[[Joining], O] | None = None,
    ) -> None:
        """Join *room* as *name*: authorize, enter, and welcome (the others are told by presence).

        In order: the app's ``authorize`` hook, given the message being handled (it may raise
        :exc:`Refuse`: then nothing else happens, nobody is told); the name check (with
        ``Channels(name_taken=...)``, a name already in the room on any node is refused); with
        ``Channels(single_room=True)`` the room the connection is in is left (a join of the room
        the connection is in, under another name, leaves it first; under the same name, the
        membership stays and nobody is told, unless *meta* changes: then an update); the membership,
        with *meta*; and the welcome, ``welcome(joining)``, sent with the id of the message
        being handled. In a room with history the welcome comes first, then what was missed
        since ``since`` (or the last ``history`` messages), then live traffic, with no gap and
        no duplicate. The room's members on every node get the app's ``joined`` message.

        Args:
            room: the room's name.
            name: this connection's name in the room (what presence lists).
            meta: its presence metadata there (a JSON object, bounded by the hub's
                ``max_presence_meta_bytes``).
            identity: who the client is across reconnections (the history never replays a
                message to the identity that sent it); default: unchanged.
            since: the position to recover from (rooms with history only).
            history: instead of ``since``: how many of the room's last messages to send after
                the welcome (at most the history's ``max_messages``); ignored with ``since``.
            welcome: makes the welcome from the :class:`Joining`; None sends none.

        Raises:
            Refuse: the hook refused, the name is taken, the metadata or ``history`` is out of
                bounds, or a shared broker cannot answer.
        """
        channels, hub, client = self.channels, self.hub, self.client
        if channels.authorize is not None:
            await channels.authorize(self, room, self.message)
        if history is not None and history < 0:
            raise Refuse(f"history must be a count of at least 0, got {history}")
        present = await hub.presence_state(room)
        others = [m for m in present if not _is(m, hub, client)]
        if channels.name_taken is not None and any(m.name == name for m in others):
            raise Refuse(channels.name_taken.format(name=name, room=room))
        # A join of the room one is in under the same name (a client recovering a gap, say)
        # keeps the membership: the others hear of it only if the metadata changes.
        staying = room in hub.rooms_of(client) and client.name == name
        for current in hub.rooms_of(client):
            if current == room and staying:
                continue
            if channels.single_room or current == room:
                hub.leave(client, current)  # the presence watchers tell its members
        if staying and meta is not None:
            mine = [m for m in present if _is(m, hub, client)]
            if not mine or dict(mine[0].meta) != dict(meta):
                hub.update_presence(client, room, meta)
        client.name = name
        if identity is not None:
            client.identity = identity
        try:
            if hub.history_bounds(room) is None:
                hub.join(client, room, meta=meta)
                # Read after joining: with a shared broker this waits until the membership is
                # registered cluster-wide, so the welcome lists what the others see.
                members = tuple(await hub.presence_state(room))
                if welcome is not None:
                    await self.reply(welcome(Joining(room, members)))
                return
            joiner = Member(room, hub.node_id, client.id, name, meta=dict(meta or {}))
            joining = Joining(room, (*others, joiner), since=since)

            def welcome_message(recovery: Recovery) -> Any:
                # Written before the replayed messages, in the same step as the join.
                assert welcome is not None
                return _with_id(welcome(attrs.evolve(joining, recovery=recovery)), self.message_id)

            await hub.join_with_history(
                client,
                room,
                since=since,
                last=history if since is None else None,
                welcome=None if welcome is None else welcome_message,
                meta=meta,
            )
        except ValueError as exc:  # metadata too large
            raise Refuse(str(exc)) from exc
        except BrokerError as exc:
            raise Refuse(f"cannot join {room!r} now: {exc}") from exc

    async def leave(self, room: str | None = None) -> bool:
        """Leave *room* (default: every room); its members on every node get the app's ``left``.

        With a message id being handled, this connection gets the ``left`` too, carrying the id.

        Returns:
            True when it was in a room it left.
        """
        hub, client = self.hub, self.client
        rooms = hub.rooms_of(client) if room is None else [room] if room in hub.rooms_of(client) else []
        for name in rooms:
            hub.leave(client, name)
        render = self.channels.left
        if rooms and render is not None and self.message_id is not None and client.name is not None:
            await self.reply(render(Member(rooms[-1], hub.node_id, client.id, client.name)))
        return bool(rooms)

    def update(self, room: str, meta: Mapping[str, Any] | None) -> None:
        """Replace this connection's presence metadata in *room*; every member gets ``updated``.

        Raises:
            Refuse: the connection is not in *room*, or *meta* is too large.
        """
        try:
            self.hub.update_presence(self.client, room, meta)
        except ValueError as exc:
            raise Refuse(str(exc)) from exc


def _is(member: Member, hub: Hub, client: Client) -> bool:
    """Whether *member* is *client*'s membership (on this node)."""
    return member.client_id == client.id and member.node_id == hub.node_id
