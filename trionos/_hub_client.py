"""The hub's clients: a registered connection (:class:`~trionos.Client`) and the registry of them.

A client registers for an ``async with`` block (``async with hub.client(ws) as client``); the
registry (:class:`ClientRegistry`) refuses a taken id, makes the client its connection's write
listener (so a direct ``send`` first writes what the client's rooms queued), and on the way out
hands the client to the hub, which takes it out of every room.
"""

from __future__ import annotations

import reprlib
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Generic, Self, TypeAlias, TypeVar

from ._history import Position
from ._hub_protocols import HubConnection, HubTransport, T
from ._ratelimit import TokenBucket

if TYPE_CHECKING:
    from ._hub import Hub

#: How client-supplied text appears in log lines: strings cut to 80 characters, containers to a few
#: items (``reprlib`` marks what it cut with ``...``).
SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = 80
SHORT.maxlist = SHORT.maxdict = SHORT.maxtuple = SHORT.maxset = 4

__all__ = ["SHORT", "AnyClient", "C", "Client", "ClientRegistry", "Sent"]


class Client(Generic[T]):
    """A registered connection: what :meth:`Hub.client <trionos.Hub.client>` returns and yields.

    Hashable by object identity. Make one with :meth:`Hub.client <trionos.Hub.client>`, not
    directly. Generic in its connection's type (``T``, a :class:`~trionos.HubConnection`):
    ``hub.client(ws)`` of a :class:`~trionos.WebSocket` is a ``Client[WebSocket]``, which a bare
    ``Client`` annotation means too; the hub's own methods take any ``Client[HubConnection]``.

    Args:
        hub: the hub it registers with.
        registry: the hub's registry of clients (what entering and leaving the block call).
        ws: its connection.
        client_id: its id, unique in the hub while registered.
        name: the application's label for it (a username, say): what :meth:`Hub.presence
            <trionos.Hub.presence>` lists (with a shared broker, other nodes see the name it had
            when it joined a room).
        identity: who the client is across reconnections (default: ``client_id``, which is per
            connection). A room's history remembers the identity a broadcast excluded and never
            replays that message to the same identity.
    """

    def __init__(
        self,
        hub: Hub,
        registry: ClientRegistry,
        ws: T,
        client_id: str,
        name: str | None,
        identity: str | None = None,
    ) -> None:
        self.hub = hub
        self._registry = registry
        self.ws = ws
        #: The connection's byte stream, for the broadcast fast path.
        self.transport: HubTransport = ws.transport
        self.id = client_id
        self.name = name
        #: Its message rate limit's state, made at its first :meth:`Hub.admit <trionos.Hub.admit>`.
        self.bucket: TokenBucket | None = None
        #: Who the client is across reconnections (a username, a session token): see the class doc.
        self.identity = identity if identity is not None else client_id

    def __repr__(self) -> str:
        # Cut: the id and name may come from a client, and this goes into log lines.
        return f"<trionos.Client {SHORT.repr(self.id)} name={SHORT.repr(self.name)}>"

    @property
    def rooms(self) -> list[str]:
        """The rooms this client is in, in the order it joined them."""
        return self.hub.rooms_of(self)

    def before_write(self) -> None:
        """Called by its transport before a direct write (a ``send``): queued broadcasts go out first.

        Part of :class:`~trionos.HubTransport`'s contract: a transport calls its
        ``write_listener``'s ``before_write()`` before any write of its own.
        """
        self._registry.flush(self)

    # ``hub.client(ws)`` returns the client itself, registered for the ``async with`` block: a
    # separate registration object would be one more allocation held by every connection.

    async def __aenter__(self) -> Self:
        self._registry.register(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._registry.unregister(self)


#: What the hub's methods take: a client of any connection type.
AnyClient: TypeAlias = "Client[HubConnection]"
#: The connection type of the client :meth:`Hub.client <trionos.Hub.client>` makes.
C = TypeVar("C", bound=HubConnection)


class Sent(int):
    """What :meth:`Hub.broadcast <trionos.Hub.broadcast>` returns: the local recipients and the position.

    An ``int`` (the count, as before history existed) with one more attribute, ``position``.

    Args:
        count: the number of local recipients.
        position: the :class:`~trionos.Position` the message got in the room's history, or None
            when the room keeps no history.
    """

    position: Position | None = None

    def __new__(cls, count: int, position: Position | None = None) -> Sent:
        sent = super().__new__(cls, count)
        if position is not None:
            sent.position = position
        return sent

    def __repr__(self) -> str:
        return f"Sent({int(self)}, position={self.position!r})"


class ClientRegistry:
    """The registered clients of one hub, by id.

    Bound: one entry per registered client.

    Args:
        check_running: raises when the hub is not running (a client cannot register then).
        flush: writes what a client's rooms queued (before its own direct writes).
        left: takes an unregistered client out of the hub's rooms and bookkeeping.
    """

    def __init__(
        self,
        *,
        check_running: Callable[[], object],
        flush: Callable[[AnyClient], None],
        left: Callable[[AnyClient], None],
    ) -> None:
        self._check_running = check_running
        self.flush = flush
        self._left = left
        self._clients: dict[str, AnyClient] = {}
        #: The clients by id, a live read-only view.
        self.view: Mapping[str, AnyClient] = types.MappingProxyType(self._clients)

    def get(self, client_id: str) -> AnyClient | None:
        """The registered client with this id, or None."""
        return self._clients.get(client_id)

    def __len__(self) -> int:
        return len(self._clients)

    def register(self, client: AnyClient) -> None:
        """Register *client* (entering its ``async with`` block).

        Raises:
            RuntimeError: the hub is not running, or *client* is registered already.
            ValueError: another client has its id.
        """
        self._check_running()
        if client.id in self._clients:
            if self._clients[client.id] is client:
                raise RuntimeError(f"{client!r} is already registered: enter hub.client(ws) once")
            raise ValueError(f"a client with id {client.id!r} is already registered")
        self._clients[client.id] = client
        # A direct write on this connection first writes what its rooms have queued, so a
        # broadcast made before a send still arrives before it (see _fanout).
        client.transport.write_listener = client

    def unregister(self, client: AnyClient) -> None:
        """Unregister *client* (leaving its block): what it was sent goes out first, then it leaves."""
        self.flush(client)
        client.transport.write_listener = None
        del self._clients[client.id]
        self._left(client)
