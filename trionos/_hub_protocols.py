"""What the hub needs from a connection and from its transport, as typing Protocols.

:class:`~trionos.WebSocket` (with its :class:`~trionos._transport.Transport`) implements both,
and so does the trio-websocket bridge (:class:`~trionos.BridgedWebSocket`), through public
names only. Another connection type can join a hub by implementing them too.

The broadcast fast path (:func:`trionos._transport.write_each`) writes straight into the socket
of trionos' own transports; any other :class:`HubTransport` gets every frame through
:meth:`HubTransport.write_nowait` (or :meth:`~HubTransport.write_dropping_oldest`), and its
:meth:`~HubTransport.wait_for_progress` paces the ``disconnect`` policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._transport import WriteListener

__all__ = ["HubConnection", "HubTransport", "T"]


class HubTransport(Protocol):
    """What the hub needs from a connection's outgoing byte stream.

    Attributes:
        write_listener: set by the hub while the connection is registered; the transport calls
            its ``before_write()`` before any write of its own (a ``send``), so that what the
            connection's rooms queued before goes out first.
    """

    write_listener: WriteListener | None

    def write_nowait(self, frame: bytes) -> bool:
        """Queue or write *frame* (a complete WebSocket frame) without waiting.

        Returns:
            False, having done nothing, when the transport's byte bound has no room for it.

        Raises:
            trio.ClosedResourceError: the connection is closed.
            trio.BrokenResourceError: the connection failed.
        """
        ...

    def write_dropping_oldest(self, frame: bytes) -> int:
        """Queue or write *frame*, dropping the oldest queued frames to keep the bound.

        Returns:
            How many frames were dropped.

        Raises:
            trio.ClosedResourceError: the connection is closed.
            trio.BrokenResourceError: the connection failed.
        """
        ...

    async def wait_for_progress(self) -> None:
        """Return once some queued bytes went on towards the peer (or the connection closed)."""
        ...


class HubConnection(Protocol):
    """What :meth:`Hub.client <trionos.Hub.client>` needs from a connection.

    Attributes:
        id: unique among the hub's registered connections (the client id by default).
    """

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed (the hub then skips it)."""
        ...

    @property
    def transport(self) -> HubTransport:
        """Its outgoing byte stream, as the hub writes to it."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close the connection with *code* and *reason* without waiting (slow client, rate limit)."""
        ...


if TYPE_CHECKING:
    # A default, so that a plain ``trionos.Client`` annotation means a Client of a WebSocket.
    from typing_extensions import TypeVar

    from ._connection import WebSocket

    T = TypeVar("T", bound=HubConnection, covariant=True, default=WebSocket)
else:
    from typing import TypeVar

    T = TypeVar("T", bound=HubConnection, covariant=True)
