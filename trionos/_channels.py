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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Generic, Protocol, TypedDict, TypeVar, Unpack, overload, runtime_checkable

from ._broker import Member, PresenceDiff
from ._connection import MessageCodec
from ._errors import ConnectionClosed, DecodeError
from ._hub import Hub
from ._hub_client import SHORT
from ._metrics import Metrics
from ._server import Handler, Request
from ._session import (
    INTERNAL_ERROR,
    CloseConnection,
    MessageId,
    Refuse,
    Reject,
    Session,
    message_id,
)

__all__ = ["ChannelSettings", "Channels"]

logger = logging.getLogger("trionos.channels")

S = TypeVar("S")  # the connection's state
I = TypeVar("I")  # noqa: E741 (the inbound union, beside O for outbound)
O = TypeVar("O")  # noqa: E741 (the outbound union)
M = TypeVar("M")  # one message class


@runtime_checkable
class _Connected(Protocol):
    """A broker that knows whether it can reach its server (:class:`~trionos.RedisBroker`)."""

    @property
    def connected(self) -> bool: ...


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
            session.message, session.message_id = message, message_id(message)
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
                logger.exception("handler %r failed on %s from %r", handler, SHORT.repr(message), client)
                await session.error(INTERNAL_ERROR)


def _peek_id(decode: Callable[[Any], object], raw: object) -> MessageId | None:
    """The id of a message refused before dispatch (None when it does not decode or has none)."""
    try:
        return message_id(decode(raw))
    except DecodeError:
        return None
