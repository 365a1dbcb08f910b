"""The hub: registered clients, rooms, one memory channel per room, and the fan-out.

Broadcast path: ``broadcast()`` encodes the message into one WebSocket frame, snapshots the
room's recipients and puts both on the room's bounded memory channel (waiting when it is full:
that is how a fast sender feels a backlog). The room's fan-out task takes each frame and writes
the same bytes to every recipient's socket without awaiting. Only a recipient whose socket
buffer is full falls back to its bounded outbox, drained by a writer task that exists while the
backlog does. The slow-client policy decides what happens when that outbox is full too.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import trio

from ._connection import MessageCodec, WebSocket
from ._frames import message_frame
from ._rooms import Rooms

__all__ = ["Client", "Hub", "SlowClientPolicy"]

logger = logging.getLogger("trionos.hub")

#: The close code sent to a client dropped by the ``disconnect`` policy (RFC 6455: policy violation).
SLOW_CLIENT_CLOSE_CODE = 1008


class SlowClientPolicy(enum.Enum):
    """What the fan-out does when a client's outbox is full.

    ``DISCONNECT`` (the default): wait for room in the outbox, and let every wait last at most the
    hub's ``grace`` period. The wait holds the room's fan-out, so its channel fills and senders
    wait too (backpressure reaches them through TCP). A client that makes no progress for the
    whole grace period is closed with code 1008 and a reason that says so; the room goes on. A
    client that keeps reading, however slowly, is never dropped.

    ``DROP_OLDEST``: never wait. The oldest queued messages for that client are dropped to make
    room for the new one (for live feeds where only fresh data matters).
    """

    DISCONNECT = "disconnect"
    DROP_OLDEST = "drop_oldest"


class Client:
    """A registered connection: what ``hub.client(ws)`` yields.

    ``name`` is the application's label for the client (a username, say); it is what
    :meth:`Hub.presence` lists. Hashable by identity.
    """

    def __init__(self, hub: Hub, ws: WebSocket, client_id: str, name: str | None) -> None:
        self.hub = hub
        self.ws = ws
        self.id = client_id
        self.name = name

    def __repr__(self) -> str:
        return f"<trionos.Client {self.id} name={self.name!r}>"

    @property
    def rooms(self) -> list[str]:
        """The rooms this client is in, in the order it joined them."""
        return self.hub.rooms_of(self)


class _Room:
    def __init__(self, name: str, queue_size: int, policy: SlowClientPolicy) -> None:
        self.name = name
        self.policy = policy
        self.send_channel, self.receive_channel = trio.open_memory_channel[tuple[bytes, tuple[Client, ...]]](
            queue_size
        )


def _policy(value: SlowClientPolicy | str) -> SlowClientPolicy:
    return value if isinstance(value, SlowClientPolicy) else SlowClientPolicy(value)


class Hub:
    """Clients, rooms and broadcast for one server process.

    Use it as ``async with trionos.Hub() as hub:`` (it owns a nursery for the rooms' fan-out
    tasks) or start it in a nursery you own with ``hub = await nursery.start(Hub().run)``.

    Bounds: each room's channel holds ``room_queue_size`` pending broadcasts (``broadcast`` waits
    beyond that); each client's outbox holds the ``max_outbox_bytes`` given to ``serve``; the
    ``policy`` says what happens beyond that, with ``grace`` seconds (default 2) for
    ``disconnect``. ``codec`` is the default for typed broadcasts.
    """

    def __init__(
        self,
        *,
        policy: SlowClientPolicy | str = SlowClientPolicy.DISCONNECT,
        grace: float = 2.0,
        room_queue_size: int = 64,
        codec: MessageCodec[Any] | None = None,
    ) -> None:
        self.policy = _policy(policy)
        self.grace = grace
        self.room_queue_size = room_queue_size
        self.codec = codec
        self._rooms: Rooms[Client] = Rooms()
        self._channels: dict[str, _Room] = {}
        self._room_policies: dict[str, SlowClientPolicy] = {}
        self._clients: dict[str, Client] = {}
        self._nursery: trio.Nursery | None = None
        #: Fan-out tasks running now (one per room with members, and one for ``broadcast_all``).
        self.fan_out_tasks = 0
        #: Clients closed by the ``disconnect`` policy since the hub started.
        self.slow_clients_dropped = 0
        self._all_room: _Room | None = None
        self._cm: Any = None

    # --- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's fan-out tasks until cancelled (the ``nursery.start`` convention)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def __aenter__(self) -> Self:
        self._cm = self._open()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._cm.__aexit__(*exc_info)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Self]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the hub is not running: use `async with Hub()` or `nursery.start(hub.run)`")
        return self._nursery

    # --- registry ----------------------------------------------------------------------------

    @asynccontextmanager
    async def client(
        self, ws: WebSocket, *, client_id: str | None = None, name: str | None = None
    ) -> AsyncIterator[Client]:
        """Register ``ws`` for the duration of the block (the seed's ``addClient``).

        On exit, whatever the cause (normal close, abrupt disconnect, heartbeat timeout,
        cancellation), the client leaves every room at once, without awaiting.
        """
        self._require_nursery()
        cid = client_id or ws.id
        if cid in self._clients:
            raise ValueError(f"a client with id {cid!r} is already registered")
        client = Client(self, ws, cid, name)
        self._clients[cid] = client
        try:
            yield client
        finally:
            del self._clients[cid]
            for room in self._rooms.drop(client):
                self._room_emptied_check(room)
            if not self._clients and self._all_room is not None:
                self._all_room.send_channel.close()
                self._all_room = None

    @property
    def clients(self) -> dict[str, Client]:
        """Registered clients by id (read-only view)."""
        return dict(self._clients)

    def get(self, client_id: str) -> Client | None:
        """The registered client with this id, if any."""
        return self._clients.get(client_id)

    # --- rooms -------------------------------------------------------------------------------

    def set_room_policy(self, room: str, policy: SlowClientPolicy | str) -> None:
        """Use ``policy`` for ``room`` instead of the hub's default."""
        self._room_policies[room] = _policy(policy)
        if room in self._channels:
            self._channels[room].policy = self._room_policies[room]

    def join(self, client: Client, room: str) -> bool:
        """Add ``client`` to ``room`` (creating it); True if it was not already a member."""
        if self._clients.get(client.id) is not client:
            raise ValueError(f"{client!r} is not registered with this hub")
        if room not in self._channels:
            self._start_room(room)
        return self._rooms.join(client, room)

    def leave(self, client: Client, room: str) -> bool:
        """Remove ``client`` from ``room``; True if it was a member. An empty room disappears."""
        left = self._rooms.leave(client, room)
        if left:
            self._room_emptied_check(room)
        return left

    def members(self, room: str) -> list[Client]:
        """The members of ``room`` in join order."""
        return self._rooms.members(room)

    def presence(self, room: str) -> list[str]:
        """The names of the members of ``room`` in join order (clients without a name are skipped)."""
        return [c.name for c in self._rooms.member_view(room) if c.name is not None]

    def rooms(self) -> list[str]:
        """Rooms that have members."""
        return self._rooms.rooms()

    def rooms_of(self, client: Client) -> list[str]:
        """The rooms ``client`` is in."""
        return self._rooms.rooms_of(client)

    def _start_room(self, room: str) -> None:
        nursery = self._require_nursery()
        state = _Room(room, self.room_queue_size, self._room_policies.get(room, self.policy))
        self._channels[room] = state
        self.fan_out_tasks += 1
        nursery.start_soon(self._fan_out, state)

    def _room_emptied_check(self, room: str) -> None:
        if not self._rooms.member_view(room) and room in self._channels:
            # Closing the channel is how the fan-out task learns it is done; it still delivers
            # what is already queued to the recipients snapshotted at broadcast time.
            self._channels.pop(room).send_channel.close()

    # --- broadcast ---------------------------------------------------------------------------

    def encode(self, message: Any, codec: MessageCodec[Any] | None = None) -> bytes:
        """Encode ``message`` once into a frame: text for ``str``, binary for ``bytes``, else the codec."""
        if isinstance(message, str | bytes):
            return message_frame(message)
        codec = codec or self.codec
        if codec is None:
            raise TypeError(
                f"cannot broadcast a {type(message).__name__} without a codec: pass codec= or Hub(codec=...)"
            )
        return message_frame(codec.encode(message))

    async def broadcast(
        self,
        room: str,
        message: Any,
        *,
        exclude: Client | None = None,
        codec: MessageCodec[Any] | None = None,
    ) -> int:
        """Send ``message`` to every member of ``room`` except ``exclude``; return how many.

        The message is encoded once. Recipients are the members at the time of the call. Waits
        while the room's channel is full. Per sender, messages reach each recipient in order.
        """
        frame = self.encode(message, codec)
        state = self._channels.get(room)
        if state is None:
            return 0
        recipients = tuple(c for c in self._rooms.member_view(room) if c is not exclude)
        if recipients:
            await state.send_channel.send((frame, recipients))
        return len(recipients)

    async def broadcast_all(
        self, message: Any, *, exclude: Client | None = None, codec: MessageCodec[Any] | None = None
    ) -> int:
        """Send ``message`` to every registered client except ``exclude``; return how many."""
        frame = self.encode(message, codec)
        if self._all_room is None:
            self._all_room = _Room("*", self.room_queue_size, self.policy)
            self.fan_out_tasks += 1
            self._require_nursery().start_soon(self._fan_out, self._all_room)
        recipients = tuple(c for c in self._clients.values() if c is not exclude)
        if recipients:
            await self._all_room.send_channel.send((frame, recipients))
        return len(recipients)

    async def _fan_out(self, state: _Room) -> None:
        try:
            async with state.receive_channel:
                async for frame, recipients in state.receive_channel:
                    for client in recipients:
                        if not self._offer(client, frame, state.policy):
                            await self._wait_for_room(client, frame)
        finally:
            self.fan_out_tasks -= 1

    @staticmethod
    def _offer(client: Client, frame: bytes, policy: SlowClientPolicy) -> bool:
        # The fast path: no await, no task switch. False only when the outbox is full.
        transport = client.ws._transport
        try:
            if policy is SlowClientPolicy.DROP_OLDEST:
                transport.write_dropping_oldest(frame)
                return True
            return transport.write_nowait(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return True  # gone: its handler is ending and will unregister it

    async def _wait_for_room(self, client: Client, frame: bytes) -> None:
        transport = client.ws._transport
        while True:
            with trio.move_on_after(self.grace) as waited:
                await transport.wait_for_progress()
            if waited.cancelled_caught:
                self.slow_clients_dropped += 1
                reason = f"slow client: outbox full with no progress for {self.grace:g} s"
                logger.warning("closing %r: %s", client, reason)
                client.ws.abort(SLOW_CLIENT_CLOSE_CODE, reason)
                return
            try:
                if transport.write_nowait(frame):
                    return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return


