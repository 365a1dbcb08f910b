"""A hypothesis state machine drives the hub over in-memory connections and checks a plain model.

The machine's rules are synchronous, so a Trio loop runs in a helper thread and each rule calls
into it with ``trio.from_thread.run``. Only memory streams are involved, so
``wait_all_tasks_blocked`` tells when every delivery has landed.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

import trionos
from tests.helpers import TrioThread
from trionos.testing import open_memory_server

ROOMS = ("r0", "r1", "r2")


class PeerClient:
    """One connected test client and what it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[str] = []
        self.leave = trio.Event()
        self.closed = trio.Event()


class HubMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.server_side: dict[str, trionos.Client] = {}
        self.expected: dict[str, list[str]] = {}
        self.model_rooms: dict[str, list[str]] = {}
        self.live: dict[str, PeerClient] = {}
        self.counter = 0
        self.trio.run(self._start)

    async def _start(self) -> None:
        self.hub = await self.trio.nursery.start(trionos.Hub(room_queue_size=4).run)
        self.stop_server = trio.Event()
        self.server_stopped = trio.Event()
        self.server = await self.trio.nursery.start(self._serve)

    async def _serve(self, task_status: trio.TaskStatus[Any]) -> None:
        async with open_memory_server(self._handler, heartbeat=None) as server:
            task_status.started(server)
            await self.stop_server.wait()
        self.server_stopped.set()

    async def _handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        async with self.hub.client(ws, client_id=req.path.strip("/")) as client:
            self.server_side[client.id] = client
            try:
                async for _ in ws:
                    pass
            finally:
                del self.server_side[client.id]

    async def _run_client(self, client: PeerClient, connected: trio.Event) -> None:
        async with self.server.connect("/" + client.name, message_queue_size=1000) as ws:
            while client.name not in self.server_side:
                await trio.testing.wait_all_tasks_blocked()
            connected.set()
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    async for message in ws:
                        assert isinstance(message, str)
                        client.received.append(message)

                nursery.start_soon(read)
                await client.leave.wait()
                nursery.cancel_scope.cancel()
        client.closed.set()

    async def _settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()

    # --- rules -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.live) < 5)
    @rule(target=clients)
    def connect(self) -> str:
        self.counter += 1
        client = PeerClient(f"c{self.counter}")

        async def go() -> None:
            connected = trio.Event()
            self.trio.nursery.start_soon(self._run_client, client, connected)
            await connected.wait()

        self.trio.run(go)
        self.live[client.name] = client
        self.expected[client.name] = []
        return client.name

    @rule(name=clients, room=st.sampled_from(ROOMS))
    def join(self, name: str, room: str) -> None:
        if name not in self.live:
            return

        async def go() -> None:
            self.hub.join(self.server_side[name], room)

        self.trio.run(go)
        members = self.model_rooms.setdefault(room, [])
        if name not in members:
            members.append(name)

    @rule(name=clients, room=st.sampled_from(ROOMS))
    def leave(self, name: str, room: str) -> None:
        if name not in self.live:
            return

        async def go() -> None:
            self.hub.leave(self.server_side[name], room)

        self.trio.run(go)
        if name in self.model_rooms.get(room, []):
            self.model_rooms[room].remove(name)

    @rule(sender=clients, room=st.sampled_from(ROOMS), exclude=st.booleans(), count=st.integers(1, 6))
    def broadcast(self, sender: str, room: str, exclude: bool, count: int) -> None:
        if sender not in self.live:
            return
        texts = []
        for _ in range(count):
            self.counter += 1
            texts.append(f"{sender}:{self.counter}")

        async def go() -> None:
            client = self.server_side[sender]
            for text in texts:  # a burst: no settling between messages
                await self.hub.broadcast(room, text, exclude=client if exclude else None)

        self.trio.run(go)
        for member in self.model_rooms.get(room, []):
            if not (exclude and member == sender):
                self.expected[member].extend(texts)

    @rule(sender=clients)
    def broadcast_all(self, sender: str) -> None:
        if sender not in self.live:
            return
        self.counter += 1
        text = f"all:{self.counter}"

        async def go() -> None:
            await self.hub.broadcast_all(text, exclude=self.server_side[sender])

        self.trio.run(go)
        for name in self.live:
            if name != sender:
                self.expected[name].append(text)

    @rule(name=consumes(clients))
    def disconnect(self, name: str) -> None:
        client = self.live.pop(name, None)
        if client is None:
            return

        async def go() -> None:
            client.leave.set()
            await client.closed.wait()
            await trio.testing.wait_all_tasks_blocked()

        self.trio.run(go)
        for members in self.model_rooms.values():
            if name in members:
                members.remove(name)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def everyone_got_exactly_their_messages_in_order(self) -> None:
        self.trio.run(self._settle)
        for name, client in self.live.items():
            assert client.received == self.expected[name], name

    @invariant()
    def membership_matches_the_model(self) -> None:
        model = {room: members for room, members in self.model_rooms.items() if members}
        actual = {room: [c.id for c in self.hub.members(room)] for room in self.hub.rooms()}
        assert actual == model

    def teardown(self) -> None:
        for name in list(self.live):
            self.disconnect(name)

        async def finish() -> None:
            await trio.testing.wait_all_tasks_blocked()
            assert self.hub.rooms() == []
            assert self.hub.clients == {}
            assert self.hub.fan_out_tasks == 0, "a fan-out task outlived its room"
            self.stop_server.set()
            await self.server_stopped.wait()

        self.trio.run(finish)
        self.trio.stop()


HubMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHubModel = HubMachine.TestCase
TestHubModel.__doc__ = "Joins, leaves, bursts and disconnects agree with the model."
