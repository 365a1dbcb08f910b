"""The Redis broker against a real redis-server: hubs in one process acting as separate nodes."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio
import trio.testing

import trionos
from tests.helpers import CountingCodec
from tests.redis_server import RedisServer, free_port, private_redis_server
from trionos._broker import Member
from trionos._redis import RedisBroker
from trionos.testing import expect_message, expect_silence, open_memory_server

#: Short presence settings, so that expiry tests take about a second.
FAST: dict[str, Any] = {"presence_ttl": 0.6, "heartbeat_interval": 0.2}
#: Remote deliveries and expiries are asynchronous: how long a test waits for one.
PATIENCE = 5.0


class Node:
    """One hub with a RedisBroker and in-memory clients: a connection to ``/name`` is client ``name``."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.hub = trionos.Hub(broker=broker, on_member_expired=self.on_expired)
        self.server: Any = None
        self.clients: dict[str, trionos.Client] = {}
        self.expired: list[Member] = []
        self.expiry = trio.Event()
        self._registered = trio.Event()

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        name = req.path.strip("/")
        async with self.hub.client(ws, client_id=name, name=name) as client:
            self.clients[name] = client
            self._registered.set()
            self._registered = trio.Event()
            try:
                async for _ in ws:
                    pass
            finally:
                self.clients.pop(name, None)

    @asynccontextmanager
    async def connect(self, name: str, *rooms: str) -> AsyncIterator[trionos.WebSocket]:
        """Connect client ``name``, join ``rooms`` and wait until this node's presence shows it."""
        async with self.server.connect("/" + name, message_queue_size=256) as ws:
            while name not in self.clients:
                await self._registered.wait()
            for room in rooms:
                self.hub.join(self.clients[name], room)
                await self.hub.presence(room)  # returns once the join is registered and subscribed
            yield ws

    async def on_expired(self, member: Member) -> None:
        self.expired.append(member)
        self.expiry.set()


@asynccontextmanager
async def open_node(url: str, prefix: str, **options: Any) -> AsyncIterator[Node]:
    """A node: a hub on a fresh RedisBroker, with an in-memory server for its clients."""
    node = Node(RedisBroker(url, prefix=prefix, **options))
    async with node.hub, open_memory_server(node.handler, heartbeat=None) as server:
        node.server = server
        yield node


async def test_broadcasts_cross_nodes_with_sender_exclusion(redis: str, prefix: str) -> None:
    """Members on both nodes get a broadcast once, except the excluded sender; typed ones encode once."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with (
            a.connect("ann", "r") as ann,
            a.connect("al", "r") as al,
            b.connect("bob", "r") as bob,
            b.connect("bea", "other") as bea,
        ):
            assert await a.hub.broadcast("r", "from ann", exclude=a.clients["ann"]) == 1
            await expect_message(al, "from ann")
            await expect_message(bob, "from ann", timeout=PATIENCE)
            codec = CountingCodec()
            assert await b.hub.broadcast("r", 42, exclude=b.clients["bob"], codec=codec) == 0
            await expect_message(ann, "typed:42", timeout=PATIENCE)
            await expect_message(al, "typed:42", timeout=PATIENCE)
            assert codec.encoded == 1
            await b.hub.broadcast("r", "bob to all", exclude=None)
            await expect_message(bob, "bob to all")
            await expect_message(ann, "bob to all", timeout=PATIENCE)
            for ws in (ann, bob, bea):
                await expect_silence(ws, timeout=0.2)
            assert a.broker.received == 2 and b.broker.received == 1


async def test_broadcast_all_reaches_every_client_on_every_node(redis: str, prefix: str) -> None:
    """broadcast_all goes to every client of every node, in a room or not, except the excluded one."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with a.connect("ann") as ann, b.connect("bob") as bob, b.connect("bea", "r") as bea:
            await b.hub.broadcast_all("news", exclude=b.clients["bea"])
            await expect_message(bob, "news")
            await expect_message(ann, "news", timeout=PATIENCE)
            await expect_silence(bea, timeout=0.2)


async def test_presence_lists_every_node_in_join_order(redis: str, prefix: str) -> None:
    """Both nodes list the room's members in the order they joined, wherever they are."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with a.connect("ann", "r"), b.connect("bob", "r"), a.connect("al", "r"), b.connect("bea"):
            assert await a.hub.presence("r") == ["ann", "bob", "al"]
            assert await b.hub.presence("r") == ["ann", "bob", "al"]
            # A node's presence waits for its own changes to be registered, not for other nodes':
            # ask the node that made the change first.
            b.hub.join(b.clients["bea"], "r")
            assert await b.hub.presence("r") == ["ann", "bob", "al", "bea"]
            assert await a.hub.presence("r") == ["ann", "bob", "al", "bea"]
            a.hub.leave(a.clients["ann"], "r")
            assert await a.hub.presence("r") == ["bob", "al", "bea"]
            assert await b.hub.presence("r") == ["bob", "al", "bea"]
        # Clients that disconnect leave the registry too (once each node has synced).
        await b.hub.presence("r")
        assert await a.hub.presence("r") == []
        assert await b.hub.presence("r") == []


async def test_a_node_subscribes_only_to_rooms_with_local_members(redis: str, prefix: str) -> None:
    """A room's channel has a subscriber per node with local members; an empty room is unsubscribed."""
    channel = f"{prefix}:room:r"
    async with coredis.Redis.from_url(redis) as probe:

        async def subscribers() -> int:
            return dict(await probe.pubsub_numsub(channel))[channel.encode()]

        async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
            assert await subscribers() == 0
            async with a.connect("ann", "r") as ann:
                assert await subscribers() == 1
                async with b.connect("bob", "elsewhere") as bob:
                    await b.hub.broadcast("r", "to a room b does not serve")
                    await expect_message(ann, "to a room b does not serve", timeout=PATIENCE)
                    before = b.broker.received
                    await a.hub.broadcast("r", "b never decodes this")
                    await a.hub.broadcast("elsewhere", "but this")
                    # One publisher, one subscriber connection: had b received the first, it would
                    # have handled it before the second.
                    await expect_message(bob, "but this", timeout=PATIENCE)
                    assert b.broker.received == before + 1
                a.hub.leave(a.clients["ann"], "r")
                await a.hub.presence("r")
                assert await subscribers() == 0


async def hold(
    node: Node, name: str, rooms: tuple[str, ...], release: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    """Keep client ``name`` of ``node`` connected (in ``rooms``) until ``release`` is set."""
    async with node.connect(name, *rooms):
        task_status.started()
        await release.wait()


async def wait_any(*events: trio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


async def test_members_of_a_node_that_died_expire_on_the_others(redis: str, prefix: str) -> None:
    """A node that stops without cleaning up has its members reported once, within TTL + interval."""
    async with open_node(redis, prefix, **FAST) as a, open_node(redis, prefix, **FAST) as c:
        async with a.connect("ann", "r"), c.connect("cid", "r"):
            # close_timeout so short that no clean-up can run: a crash, as far as Redis can tell.
            b = Node(RedisBroker(redis, prefix=prefix, **FAST, close_timeout=1e-9))
            release = trio.Event()
            async with (
                open_memory_server(b.handler, heartbeat=None) as b.server,
                trio.open_nursery() as holders,
            ):
                async with b.hub:
                    await holders.start(hold, b, "bob", ("r",), release)
                    await holders.start(hold, b, "bea", ("r", "s"), release)
                    assert await a.hub.presence("r") == ["ann", "cid", "bob", "bea"]
                died = trio.current_time()  # its clients are still connected, but the node is gone
                with trio.fail_after(PATIENCE):
                    while len(a.expired) + len(c.expired) < 3:
                        await wait_any(a.expiry, c.expiry)
                        a.expiry, c.expiry = trio.Event(), trio.Event()
                release.set()
            elapsed = trio.current_time() - died
            assert elapsed < FAST["presence_ttl"] + FAST["heartbeat_interval"] + 1.0
            expired = sorted(a.expired + c.expired, key=lambda m: (m.room, m.seq))
            assert [(m.room, m.name) for m in expired] == [("r", "bob"), ("r", "bea"), ("s", "bea")]
            assert {m.node_id for m in expired} == {b.hub.node_id}
            assert await a.hub.presence("r") == ["ann", "cid"]
            assert await c.hub.presence("s") == []
            await trio.sleep(FAST["presence_ttl"])  # reported once, by one node
            assert len(a.expired) + len(c.expired) == 3


async def test_a_clean_shutdown_removes_the_nodes_records(redis: str, prefix: str) -> None:
    """A node that stops normally removes its records at once: no expiry is reported for it."""
    async with open_node(redis, prefix, **FAST) as a:
        async with a.connect("ann", "r"):
            async with open_node(redis, prefix, **FAST) as b, b.connect("bob", "r"):
                assert await a.hub.presence("r") == ["ann", "bob"]
            assert await a.hub.presence("r") == ["ann"]
            await trio.sleep(FAST["presence_ttl"] + 2 * FAST["heartbeat_interval"])
            assert a.expired == []


async def test_garbage_on_a_room_channel_is_ignored(redis: str, prefix: str) -> None:
    """A message that is not an envelope is logged and skipped; the room goes on."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with a.connect("ann", "r") as ann, coredis.Redis.from_url(redis) as probe:
            await probe.publish(f"{prefix}:room:r", b"\x07 not an envelope")
            await b.hub.broadcast("r", "still fine")
            await expect_message(ann, "still fine", timeout=PATIENCE)


async def test_redis_down_at_start_up_raises_broker_error_within_the_timeout() -> None:
    """With no Redis listening, entering the hub raises BrokerError after connect_timeout, password hidden."""
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}"
    started = trio.current_time()
    with pytest.raises(
        trionos.BrokerError, match=r"cannot reach Redis at redis://user:\*\*\*@127.0.0.1:\d+ within 0.5 s"
    ):
        async with trionos.Hub(broker=RedisBroker(url, connect_timeout=0.5)):
            pytest.fail("the hub must not start")
    assert trio.current_time() - started < 0.5 + 1.0


async def test_a_redis_that_refuses_us_fails_at_once() -> None:
    """A refusal (wrong password) is not retried until the timeout: BrokerError at once, saying so."""
    with private_redis_server("--requirepass", "right") as server:
        url = f"redis://:wrong@127.0.0.1:{server.port}"
        started = trio.current_time()
        with pytest.raises(
            trionos.BrokerError, match=r"redis://:\*\*\*@127.0.0.1:\d+ refused the connection"
        ):
            async with trionos.Hub(broker=RedisBroker(url, connect_timeout=10)):
                pytest.fail("the hub must not start")
        assert trio.current_time() - started < 2.0


async def test_redis_restart_resubscribes_while_local_delivery_goes_on(prefix: str) -> None:
    """During an outage local delivery works and publications are dropped; afterwards it all resumes."""
    with private_redis_server() as server:
        await run_restart_scenario(server, prefix)


async def run_restart_scenario(server: RedisServer, prefix: str) -> None:
    async with open_node(server.url, prefix, **FAST) as a, open_node(server.url, prefix, **FAST) as b:
        async with a.connect("ann", "r") as ann, a.connect("al", "r") as al, b.connect("bob", "r") as bob:
            await a.hub.broadcast("r", "before", exclude=a.clients["ann"])
            await expect_message(al, "before")
            await expect_message(bob, "before", timeout=PATIENCE)

            await trio.to_thread.run_sync(server.stop)
            await a.hub.broadcast("r", "during", exclude=a.clients["ann"])
            await expect_message(al, "during")  # local delivery does not need Redis
            await expect_silence(bob, timeout=0.3)
            assert await a.hub.presence("r") == ["ann", "al"]  # the local members only
            assert a.broker.publish_dropped >= 1

            await trio.to_thread.run_sync(server.start)
            # Both directions come back by themselves, once coredis has re-subscribed (its retry
            # delay is capped at reconnect_max_delay); what is published before that is lost.
            await until_delivered(a, "ann", bob, "a-to-b")
            await until_delivered(b, "bob", ann, "b-to-a")
            # The heartbeat notices the empty Redis and the syncer registers everyone again, under
            # their original join sequence numbers: the join order survives the restart.
            with trio.fail_after(PATIENCE):
                while await b.hub.presence("r") != ["ann", "al", "bob"]:  # noqa: ASYNC110 - polls Redis
                    await trio.sleep(0.05)
            async with b.connect("bea", "r"):  # joins after everyone, as before the restart
                assert await a.hub.presence("r") == ["ann", "al", "bob", "bea"]
            assert a.broker.connected and b.broker.connected


async def until_delivered(node: Node, sender: str, receiver: trionos.WebSocket, tag: str) -> None:
    """Broadcast ``tag-N`` from ``sender`` on ``node`` every 0.1 s until ``receiver`` gets one."""
    with trio.fail_after(PATIENCE):
        for attempt in range(10_000):
            await node.hub.broadcast("r", f"{tag}-{attempt}", exclude=node.clients[sender])
            with trio.move_on_after(0.1):
                while True:
                    message = await receiver.recv()
                    if isinstance(message, str) and message.startswith(tag):
                        return


def test_broker_options_are_checked() -> None:
    """Nonsense bounds are refused up front with what was expected."""
    with pytest.raises(ValueError, match="presence_ttl must be positive"):
        RedisBroker(presence_ttl=0)
    with pytest.raises(ValueError, match="must be shorter than presence_ttl"):
        RedisBroker(presence_ttl=1, heartbeat_interval=1)
    with pytest.raises(ValueError, match="at least 1"):
        RedisBroker(publish_queue_size=0)
    assert "s3cret" not in repr(RedisBroker("redis://:s3cret@127.0.0.1:1"))


async def test_a_broker_runs_once(redis: str, prefix: str) -> None:
    """A broker belongs to one hub run: a second run is refused."""
    broker = RedisBroker(redis, prefix=prefix)
    async with trionos.Hub(broker=broker):
        pass
    with pytest.raises(BaseExceptionGroup) as raised:
        async with trionos.Hub(broker=broker):
            pass
    assert raised.value.subgroup(RuntimeError) is not None
    assert "runs once" in str(raised.value.exceptions[0])


ROOT = Path(__file__).resolve().parent.parent
# Run a script with coredis and anyio (its dependency) unimportable, as without the redis extra.
WITHOUT_REDIS_EXTRA = (
    "import os, runpy, sys; sys.modules['coredis'] = None; sys.modules['anyio'] = None; "
    "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize("missing", ["coredis", "anyio"])
def test_without_the_redis_extra_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Without coredis (or anyio, which it needs), RedisBroker's ImportError names the extra."""
    for module in [m for m in sys.modules if m.startswith("trionos._redis")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ImportError, match=rf"pip install 'trionos\[redis\]' \({missing} is missing\)"):
        importlib.import_module("trionos._redis")


def test_room_chat_with_redis_but_without_the_extra_dies_saying_what_to_install() -> None:
    """``room_chat.py --redis`` without coredis/anyio fails with the pip hint, not a bare module error."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_REDIS_EXTRA, str(ROOT / "examples" / "room_chat.py"),
         "--port", "0", "--redis", "redis://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: trionos.RedisBroker needs coredis: pip install 'trionos[redis]'"), (
        done.stderr
    )
    assert "No module named 'anyio'" not in done.stderr
