"""Channels: the application layer over :class:`~trionos.Hub` (typed handlers, authorization, presence, acks).

Every room app used to write the same loop: upgrade, accept, register with the hub, apply the
rate limit, decode, answer a :exc:`~trionos.DecodeError`, dispatch, and say goodbye in a shielded,
bounded ``finally``. :class:`Channels` owns that loop; the app declares its protocol once (the
inbound codec, the outbound codec, how to word an error) and registers one handler per message
class. The anchors are Phoenix Channels (``join/3`` that may refuse with a reason, ``handle_in``
per event, replies that carry the push's ``ref``, Presence with metadata and diffs),
socket.io (connect-time ``auth``, acknowledgements) and Centrifugo (commands with ids).

The parts, in the order a connection meets them:

* ``connect(request) -> state``: sees the upgrade :class:`~trionos.Request` before it is accepted
  and returns the connection's state (the user), or raises :exc:`Reject` (status, headers, body).
* Inbound messages: rate limit (``Hub(rate_limit=...)``), decode (an undecodable one is answered
  with the app's error and never reaches a handler), then the handler registered with
  :meth:`Channels.on` for its class, called with the :class:`Session` and the message.
* A message may carry an id (the ``id`` attribute of its class): while its handler runs,
  :meth:`Session.reply` and the error it causes carry the id back.
* A handler that raises :exc:`Refuse` answers the message with the app's error (its reason); any
  other exception is logged and answered with an error ("internal error"); the connection stays
  open unless the handler raised :exc:`CloseConnection`.
* :meth:`Session.join`: the ``authorize`` hook (may :exc:`Refuse`), then the membership (with
  its presence metadata), and the welcome (with the room's members and, with history, what was
  missed or its last messages).
* Presence: every join, leave and metadata update in a room, on any node (and the leaves of the
  members of a node that died), reaches the room's members as the app's ``joined``, ``left`` and
  ``updated`` messages: each node tells its own members what its hub's presence watcher reports
  (:meth:`Hub.watch_presence <trionos.Hub.watch_presence>`), so no app code announces anything.

A :class:`Channels` is an application object the runner serves (``lifespan`` yields the handler
while its hub runs; ``ready`` is False while the hub's broker is unreachable).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Generic, Protocol, TypedDict, TypeVar, Unpack, overload, runtime_checkable

import attrs

from ._broker import Member, PresenceDiff
from ._connection import MessageCodec
from ._errors import BrokerError, ConnectionClosed, DecodeError, TrionosError
from ._history import Position, Recovery
from ._hub import Client, Hub, Sent
from ._metrics import Metrics
from ._server import Handler, Request

__all__ = ["ChannelSettings", "Channels", "CloseConnection", "Joining", "Refuse", "Reject", "Session"]

logger = logging.getLogger("trionos.channels")

S = TypeVar("S")  # the connection's state
I = TypeVar("I")  # noqa: E741 (the inbound union, beside O for outbound)
O = TypeVar("O")  # noqa: E741 (the outbound union)
M = TypeVar("M")  # one message class

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


@runtime_checkable
class _Connected(Protocol):
    """A broker that knows whether it can reach its server (:class:`~trionos.RedisBroker`)."""

    @property
    def connected(self) -> bool: ...


def _message_id(message: object) -> MessageId | None:
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
        ``Channels(single_room=True)`` the room the connection is in is left; the membership,
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
        others = [m for m in await hub.presence_state(room) if not _is(m, hub, client)]
        if channels.name_taken is not None and any(m.name == name for m in others):
            raise Refuse(channels.name_taken.format(name=name, room=room))
        for current in hub.rooms_of(client):
            if channels.single_room or current == room:
                hub.leave(client, current)  # the presence watchers tell its members
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


class _PresenceRelay:
    """Tells this node's members of a room every presence change there, as the app's messages.

    One per hub an app is served on, watching while the app has connections on it (with no
    connection there is nobody on this node to tell). The hub calls it synchronously, and it
    never waits: each message joins the room's feed with ``broadcast_local_nowait`` (dropped and
    counted when the feed is full, as a frame from another node would be).
    """

    def __init__(self, channels: Channels[Any, Any, Any], hub: Hub) -> None:
        self._channels = channels
        self._hub = hub
        self._users = 0
        self._stack = ExitStack()

    def acquire(self) -> None:
        if self._users == 0:
            self._stack.enter_context(self._hub.watch_presence(self))
        self._users += 1

    def release(self) -> bool:
        """Drop one user; True when it was the last (the relay stopped watching)."""
        self._users -= 1
        if self._users:
            return False
        self._stack.close()
        return True

    def __call__(self, diff: PresenceDiff) -> None:
        channels, hub = self._channels, self._hub
        for render, members, joins in (
            (channels.left, diff.leaves, False),
            (channels.joined, diff.joins, True),
            (channels.updated, diff.updates, False),
        ):
            if render is None:
                continue
            for member in members:
                if member.name is None:
                    continue
                # A joiner learns the room from its welcome, not from its own "joined".
                local = joins and member.node_id == hub.node_id
                exclude = hub.get(member.client_id) if local else None
                hub.broadcast_local_nowait(diff.room, render(member), exclude=exclude)


#: What a handler registered with :meth:`Channels.on` is: the session and the message.
MessageHandler = Callable[[Session[S, O], M], Awaitable[None]]


class ChannelSettings(TypedDict, Generic[O], total=False):
    """The settings of :class:`Channels` besides its protocol and hooks, as keywords.

    What ``Channels(..., **settings)`` and :meth:`Channels.replace` take; see :class:`Channels`
    for each.
    """

    joined: Callable[[Member], O] | None
    left: Callable[[Member], O] | None
    updated: Callable[[Member], O] | None
    name_taken: str | None
    single_room: bool
    http: Handler | None
    metrics_path: str | None
    rate_limited: str
    answer_text_ping: bool
    hub: Callable[[], Hub] | None
    metrics: Metrics | None


class Channels(Generic[S, I, O]):
    """A room application: typed handlers, connect and join authorization, presence, acknowledgements.

    ::

        channels = Channels(CLIENT_CODEC, SERVER_CODEC, error=Error, connect=authenticate)

        @channels.on(Chat)
        async def chat(session: Session[User, ServerMessage], message: Chat) -> None:
            ...

    Serve it with the runner (it is an application object: :meth:`lifespan` and :meth:`ready`),
    or bind it to a hub you run yourself with :meth:`handler`.

    Args:
        inbound: decodes what clients send (a :class:`~trionos.Codec` of the inbound union).
        outbound: encodes what the server sends (also the hub's broadcast codec).
        error: makes the app's error message from a reason.
        connect: sees each upgrade request before it is accepted and returns the connection's
            state, or raises :exc:`Reject`; default: every upgrade is accepted, state None.
        authorize: the ``join`` hook, ``(session, room, message)``: returns to admit, raises
            :exc:`Refuse` to refuse with a reason.
        joined: makes the message a room's other members get when someone joins, from its
            :class:`~trionos.Member` record (None: none is sent); ``left`` and ``updated``
            likewise, for a member that left (or whose connection ended, or whose node died)
            and a member whose metadata changed (every member, itself included, gets that).
        name_taken: with it, a name may appear once per room (across nodes): a join under a
            taken name is refused with this text, formatted with ``name`` and ``room``.
        single_room: a connection is in one room at a time: joining another leaves the first.
        http: answers plain HTTP requests (default: 404, and the metrics at ``metrics_path``).
        metrics_path: serve the hub's counters there in the Prometheus text format (needs
            ``trionos[prometheus]``); None: not served.
        rate_limited: the reason sent for a message over the hub's rate limit.
        answer_text_ping: answer the raw text ``ping`` with ``pong`` (browsers' heartbeat).
        hub: makes the hub :meth:`lifespan` runs (default: :meth:`new_hub` with ``metrics``).
        metrics: the :class:`~trionos.Metrics` the runner's server counts into as well (give the
            same one to the hub, so that ``/metrics`` shows connections and rooms together).
    """

    @overload
    def __init__(
        self: Channels[None, I, O],
        inbound: MessageCodec[I],
        outbound: MessageCodec[O],
        *,
        error: Callable[[str], O],
        connect: None = None,
        authorize: Callable[[Session[None, O], str, Any], Awaitable[None]] | None = None,
        **settings: Unpack[ChannelSettings[O]],
    ) -> None: ...

    @overload
    def __init__(
        self,
        inbound: MessageCodec[I],
        outbound: MessageCodec[O],
        *,
        error: Callable[[str], O],
        connect: Callable[[Request], Awaitable[S]],
        authorize: Callable[[Session[S, O], str, Any], Awaitable[None]] | None = None,
        **settings: Unpack[ChannelSettings[O]],
    ) -> None: ...

    def __init__(
        self,
        inbound: MessageCodec[I],
        outbound: MessageCodec[O],
        *,
        error: Callable[[str], O],
        connect: Callable[[Request], Awaitable[S]] | None = None,
        authorize: Callable[[Any, str, Any], Awaitable[None]] | None = None,
        **settings: Unpack[ChannelSettings[O]],
    ) -> None:
        self.inbound = inbound
        self.outbound = outbound
        self.error = error
        self.connect = connect
        self.authorize = authorize
        self.joined: Callable[[Member], O] | None = None
        self.left: Callable[[Member], O] | None = None
        self.updated: Callable[[Member], O] | None = None
        self.name_taken: str | None = None
        self.single_room = False
        self.http: Handler | None = None
        self.metrics_path: str | None = None
        self.rate_limited = "too many messages: slow down"
        self.answer_text_ping = True
        #: The counters the server adds its own to (the runner reads it); the default hub counts into it.
        self.metrics: Metrics | None = None
        self._make_hub: Callable[[], Hub] = self._default_hub
        self._configure(settings)
        self._handlers: dict[type, MessageHandler[S, O, Any]] = {}
        self._relays: dict[Hub, _PresenceRelay] = {}
        self._running: Hub | None = None

    def __repr__(self) -> str:
        names = ", ".join(cls.__name__ for cls in self._handlers)
        return f"<trionos.Channels handling {names or 'nothing'}>"

    # --- the app's declarations ---------------------------------------------------------------

    def on(self, cls: type[M]) -> Callable[[MessageHandler[S, O, M]], MessageHandler[S, O, M]]:
        """Register the decorated coroutine function as the handler of messages of class *cls*.

        Raises:
            ValueError: *cls* has a handler already.
        """

        def register(handler: MessageHandler[S, O, M]) -> MessageHandler[S, O, M]:
            if cls in self._handlers:
                raise ValueError(f"{cls.__name__} already has a handler: {self._handlers[cls]!r}")
            self._handlers[cls] = handler
            return handler

        return register

    def new_hub(self, **options: Any) -> Hub:
        """A :class:`~trionos.Hub` for this app: its broadcasts encoded with the outbound codec.

        Args:
            options: more :class:`~trionos.Hub` arguments (``broker``, ``history``, ``rate_limit``...).
        """
        return Hub(codec=self.outbound, **options)

    def _default_hub(self) -> Hub:
        return self.new_hub() if self.metrics is None else self.new_hub(metrics=self.metrics)

    def replace(self, **changes: Unpack[ChannelSettings[O]]) -> Channels[S, I, O]:
        """The same app (the same handlers and hooks) with some settings changed.

        ``app.replace(hub=lambda: app.new_hub(broker=broker))`` serves the app on another hub.

        Args:
            changes: any of :class:`ChannelSettings`.

        Raises:
            TypeError: a name is not one of the settings.
        """
        copy: Channels[S, I, O] = object.__new__(Channels)
        copy.__dict__.update(self.__dict__)
        copy._relays = {}
        copy._running = None
        copy._configure(changes)
        return copy

    def _configure(self, settings: ChannelSettings[O]) -> None:
        unknown = sorted(set(settings) - set(ChannelSettings.__annotations__))
        if unknown:
            names = sorted(ChannelSettings.__annotations__)
            raise TypeError(f"Channels has no setting {unknown[0]!r}; settings: {names}")
        for name, value in settings.items():
            if name == "hub":
                self._make_hub = value if value is not None else self._default_hub  # type: ignore[assignment]
            else:
                setattr(self, name, value)

    # --- the application object (contract: trionos.App, trionos.SupportsReadiness) -----------

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Handler]:
        """Run this app's hub for the block and yield the request handler that uses it.

        Raises:
            BrokerError: on entering, the hub's shared broker cannot connect.
        """
        async with self._make_hub() as hub:
            self._running = hub
            self._acquire_relay(hub)
            try:
                yield self.handler(hub)
            finally:
                self._release_relay(hub)
                self._running = None

    def ready(self) -> bool:
        """False until :meth:`lifespan` runs the hub, and while its broker cannot reach its server."""
        hub = self._running
        if hub is None:
            return False
        broker = hub.broker
        return broker.connected if isinstance(broker, _Connected) else True

    # --- presence ----------------------------------------------------------------------------

    def _acquire_relay(self, hub: Hub) -> None:
        relay = self._relays.get(hub)
        if relay is None:
            relay = self._relays[hub] = _PresenceRelay(self, hub)
        relay.acquire()

    def _release_relay(self, hub: Hub) -> None:
        if self._relays[hub].release():
            del self._relays[hub]

    # --- serving ------------------------------------------------------------------------------

    def handler(self, hub: Hub) -> Handler:
        """The request handler serving this app with *hub* (a running hub made by :meth:`new_hub`)."""

        async def handle(request: Request) -> None:
            if not request.is_upgrade:
                await self._answer_http(request, hub)
                return
            state: Any = None
            if self.connect is not None:
                try:
                    state = await self.connect(request)
                except Reject as refusal:
                    await request.reject(refusal.status, refusal.body, headers=refusal.headers)
                    return
            ws = await request.accept(answer_text_ping=self.answer_text_ping)
            # Watching presence outlives the client: its own leaving (whatever ends the
            # connection: close, disconnect, heartbeat, cancellation) is told to its rooms.
            self._acquire_relay(hub)
            try:
                async with hub.client(ws) as client:
                    await self._serve(Session(self, hub, client, state))
            finally:
                self._release_relay(hub)

        return handle

    async def _answer_http(self, request: Request, hub: Hub) -> None:
        if self.metrics_path is not None and request.path == self.metrics_path:
            from ._prometheus import respond_metrics

            await respond_metrics(request, hub.metrics)
        elif self.http is not None:
            await self.http(request)
        else:
            await request.respond_text("Not Found", status=404)

    async def _serve(self, session: Session[S, O]) -> None:
        hub, client = session.hub, session.client
        ws = client.ws
        decode = self.inbound.decode
        async for raw in ws:
            if not hub.admit(client):  # over its rate limit
                if ws.closed:
                    return  # closed with 1008: it kept sending while refused
                session.message_id = _peek_id(decode, raw)
                await session.error(self.rate_limited)
                continue
            try:
                message = decode(raw)
            except DecodeError as exc:
                session.message_id = None
                await session.error(str(exc))
                continue
            session.message, session.message_id = message, _message_id(message)
            handler = self._handlers.get(type(message))
            if handler is None:
                await session.error(f"{type(message).__name__} messages are not handled here")
                continue
            try:
                await handler(session, message)
            except Refuse as refusal:
                await session.error(refusal.reason)
            except CloseConnection as close:
                await ws.close(close.code, close.reason)
                return
            except ConnectionClosed:
                raise
            except Exception:
                # The isolation boundary of one message: the handler's bug is logged and answered,
                # and the connection (and the room) go on.
                logger.exception("handler %r failed on %r from %r", handler, message, client)
                await session.error(INTERNAL_ERROR)


def _peek_id(decode: Callable[[Any], object], raw: object) -> MessageId | None:
    """The id of a message refused before dispatch (None when it does not decode or has none)."""
    try:
        return _message_id(decode(raw))
    except DecodeError:
        return None
