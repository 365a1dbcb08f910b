"""A hypothesis state machine: clients join, leave, drop and come back at their positions while others
broadcast; each must get every message of its room exactly once and in order, or be told it was partial.

It runs on the memory broker (one hub) and on Redis (two hubs sharing a real redis-server, so a
client often comes back to the other node). The machine's rules are synchronous; a Trio loop runs
in a helper thread (see tests/test_hub_stateful.py).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import trionos
import trionos._replay
from tests.helpers import TrioThread
from tests.redis_server import unique_prefix
from trionos._redis import RedisBroker
from trionos.testing import open_memory_server

USERS = ("u0", "u1", "u2", "u3")
ROOM = "r"
#: Redis delivers asynchronously: how long settling may take before the check fails.
PATIENCE = 5.0
#: Bytes each memory pipe and each server outbox hold: a few messages.
PIPE_BYTES = 64


@attrs.frozen
class Note:
    text: str


CODEC: trionos.Codec[Any] = trionos.Codec(Note)


class User:
    """One identity across its connections: what it received and what it was told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.positions = trionos.Positions()
        #: (text, offset) of every message received, over all connections, in arrival order.
        self.received: list[tuple[str, int]] = []
        #: Offsets it may legitimately lack: those before a partial recovery's replay.
        self.excused_before = 0
        #: The offset it started from (messages after it are owed to it).
        self.start: int | None = None
        self.stop: trio.Event | None = None
        self.closed: trio.Event | None = None
        self.node = 0
        #: Offsets one connection delivered more than once.
        self.duplicates: list[int] = []


class HistoryMachine(RuleBasedStateMachine):
    """Subclasses set ``redis_url`` (None: one hub on the memory broker)."""

    redis_url: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.users = {name: User(name) for name in USERS}
        #: The room's messages in offset order: (offset, text, excluded identity).
        self.log: list[tuple[int, str, str | None]] = []
        self.clients: dict[tuple[int, str], trionos.Client] = {}
        self.counter = 0
        #: Set (and replaced) whenever a user receives something: what settling on Redis waits for.
        self.progress = trio.Event()
        self.trio.run(self._start)

    def teardown(self) -> None:
        self.trio.stop()

    async def _start(self) -> None:
        prefix = unique_prefix("stateful")
        count = 1 if self.redis_url is None else 2
        self.hubs: list[trionos.Hub] = []
        self.servers: list[Any] = []
        for node in range(count):
            broker = None if self.redis_url is None else RedisBroker(self.redis_url, prefix=prefix)
            hub = trionos.Hub(broker=broker, codec=CODEC, history=trionos.HistoryBounds(max_messages=12))
            self.hubs.append(await self.trio.nursery.start(hub.run))
            self.servers.append(await self.trio.nursery.start(self._serve, node))

    async def _serve(self, node: int, task_status: trio.TaskStatus[Any]) -> None:
        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            name = req.path.strip("/")
            async with self.hubs[node].client(ws, identity=name) as client:
                self.clients[(node, name)] = client
                try:
                    async for _ in ws:
                        pass
                finally:
                    self.clients.pop((node, name), None)

        # A small pipe and outbox: a replay seldom fits at once, so most go through the client's
        # backlog (what is fanned out meanwhile queues behind it), and the seam is checked there.
        async with open_memory_server(
            handler, heartbeat=None, buffer_size=PIPE_BYTES, max_outbox_bytes=PIPE_BYTES
        ) as server:
            task_status.started(server)
            await trio.sleep_forever()

    async def _run_user(self, user: User, joined: trio.Event) -> None:
        assert user.stop is not None and user.closed is not None
        node = user.node
        async with self.servers[node].connect("/" + user.name, message_queue_size=10_000) as ws:
            while (node, user.name) not in self.clients:
                await trio.testing.wait_all_tasks_blocked()
            since = user.positions.since(ROOM)

            def welcome(recovery: trionos.Recovery) -> str:
                latest = recovery.position
                recovered = None if since is None else recovery.complete
                return json.dumps({"welcome": [latest.epoch, latest.offset], "recovered": recovered})

            client = self.clients[(node, user.name)]
            await self.hubs[node].join_with_history(client, ROOM, since=since, welcome=welcome)
            joined.set()
            async with trio.open_nursery() as nursery:
                #: Offsets this connection delivered: a repeat within one connection is a server
                #: fault. Across connections it is not: a client that saw an offset beyond a gap
                #: (its own excluded message, unacknowledged, left the gap) rejoins from before
                #: the gap, is replayed that offset again, and Positions drops it.
                delivered: set[int] = set()

                async def read() -> None:
                    async for raw in ws:
                        self.progress.set()
                        self.progress = trio.Event()
                        message = json.loads(raw)
                        if "welcome" in message:
                            epoch, offset = message["welcome"]
                            recovered = message["recovered"]
                            user.positions.welcome(ROOM, trionos.Position(epoch, offset), recovered)
                            if user.start is None:
                                user.start = offset
                            if recovered is False:
                                user.excused_before = offset + 1
                        else:
                            offset = message["offset"]
                            if offset in delivered:
                                # Recorded, not raised: the invariant reports it with its steps.
                                user.duplicates.append(offset)
                            delivered.add(offset)
                            if user.positions.receive(ROOM, offset):
                                user.received.append((message["text"], offset))

                nursery.start_soon(read)
                await user.stop.wait()
                nursery.cancel_scope.cancel()
        user.closed.set()

    async def _settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        if self.redis_url is None:
            return
        with trio.fail_after(PATIENCE):
            while not all(self._caught_up(u) for u in self.users.values() if u.stop is not None):
                await self.progress.wait()

    def _owed(self, user: User) -> list[tuple[str, int]]:
        assert user.start is not None
        return [(t, o) for o, t, x in self.log if o > user.start and x != user.name]

    def _caught_up(self, user: User) -> bool:
        if user.start is None:
            return False
        owed = self._owed(user)
        return not owed or (bool(user.received) and user.received[-1][1] >= owed[-1][1])

    # --- rules -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(USERS), node=st.integers(0, 1))
    def connect(self, name: str, node: int) -> None:
        """Connect (again) and join at the last position seen, if any."""
        user = self.users[name]
        if user.stop is not None:
            return
        user.node = node % len(self.hubs)
        user.stop, user.closed = trio.Event(), trio.Event()

        async def go() -> None:
            joined = trio.Event()
            self.trio.nursery.start_soon(self._run_user, user, joined)
            await joined.wait()
            await self._settle()

        self.trio.run(go)

    @rule(name=st.sampled_from(USERS), forget=st.booleans())
    def disconnect(self, name: str, forget: bool) -> None:
        """Drop the connection; ``forget`` also forgets the position (a fresh join later)."""
        user = self.users[name]
        if user.stop is None:
            return
        stop, closed = user.stop, user.closed
        assert closed is not None

        async def go() -> None:
            stop.set()
            await closed.wait()
            await self._settle()

        self.trio.run(go)
        user.stop = user.closed = None
        if forget:
            user.positions.forget(ROOM)
            user.start, user.received, user.excused_before = None, [], 0

    @rule(
        sender=st.sampled_from((None, *USERS)),
        node=st.integers(0, 1),
        count=st.integers(1, 5),
        acked=st.booleans(),
    )
    def broadcast(self, sender: str | None, node: int, count: int, acked: bool) -> None:
        """A burst of messages, excluding the sender when it is connected to that node.

        ``acked``: the sender notes its own offsets, as a client does from the chat's ack;
        without it, its excluded messages are gaps in its positions.
        """
        node %= len(self.hubs)
        texts = []
        for _ in range(count):
            self.counter += 1
            texts.append(f"m{self.counter}")

        async def go() -> None:
            client = None if sender is None else self.clients.get((node, sender))
            for text in texts:
                result = await self.hubs[node].broadcast(ROOM, Note(text), exclude=client)
                assert result.position is not None
                self.log.append((result.position.offset, text, None if client is None else sender))
                if sender is not None and client is not None and acked:
                    self.users[sender].positions.own(ROOM, result.position.offset)
            self.log.sort()
            # Settle only once the log holds this burst: Redis delivers it later, over the network.
            await self._settle()

        self.trio.run(go)

    # --- the property --------------------------------------------------------------------------

    @invariant()
    def every_message_once_in_order_or_told_partial(self) -> None:
        for user in self.users.values():
            assert not user.duplicates, f"{user.name} got offsets {user.duplicates} twice on one connection"
            if user.start is None:
                continue
            offsets = [o for _, o in user.received]
            assert offsets == sorted(set(offsets)), f"{user.name}: duplicates or disorder {offsets}"
            owed = self._owed(user)
            if user.stop is not None:  # connected and settled: nothing owed is missing
                missing = [m for m in owed if m not in user.received and m[1] >= user.excused_before]
                assert not missing, f"{user.name} misses {missing}"
            assert set(user.received) <= set(owed), f"{user.name} got messages it was not owed"


SETTINGS = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def small_replay_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replays in pieces of about one message, so that they go through the backlog."""
    monkeypatch.setattr(trionos._replay, "REPLAY_PIECE_BYTES", 32)


def test_history_on_the_memory_broker_matches_the_model() -> None:
    """One hub: every client gets each room message exactly once, in order, or is told it was partial."""
    run_state_machine_as_test(HistoryMachine, settings=SETTINGS)


def test_history_on_redis_matches_the_model(redis: str) -> None:
    """Two hubs on one Redis: the same guarantee when clients come back to either node."""

    class OnRedis(HistoryMachine):
        redis_url = redis

    run_state_machine_as_test(OnRedis, settings=settings(SETTINGS, max_examples=10))
