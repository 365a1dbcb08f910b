"""Presence with metadata across nodes on RedisBroker, against a real redis-server: snapshots and diffs."""

from __future__ import annotations

from collections.abc import Callable

import trio

from tests.test_redis import FAST, PATIENCE, Node, hold, open_node
from trionos import Member, PresenceDiff
from trionos._redis import RedisBroker
from trionos.testing import expect_message, open_memory_server


class Watcher:
    """Collects the presence diffs one node reports, and lets a test wait for the next ones."""

    def __init__(self) -> None:
        self.diffs: list[PresenceDiff] = []
        self._changed = trio.Event()

    def __call__(self, diff: PresenceDiff) -> None:
        self.diffs.append(diff)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, count: int) -> list[PresenceDiff]:
        """The diffs once there are at least ``count`` (within PATIENCE)."""
        with trio.fail_after(PATIENCE):
            while len(self.diffs) < count:
                await self._changed.wait()
        return self.diffs

    async def left(self, client_id: str) -> PresenceDiff:
        """The first diff where ``client_id`` leaves, once it came (within PATIENCE)."""
        with trio.fail_after(PATIENCE):
            while True:
                for diff in self.diffs:
                    if any(m.client_id == client_id for m in diff.leaves):
                        return diff
                await self._changed.wait()


def summary(diffs: list[PresenceDiff]) -> list[tuple[str, str, str, dict[str, object]]]:
    """Each diff's single change as (kind, room, client id, metadata)."""
    out: list[tuple[str, str, str, dict[str, object]]] = []
    for diff in diffs:
        for kind, members in (("join", diff.joins), ("leave", diff.leaves), ("update", diff.updates)):
            out.extend((kind, m.room, m.client_id, dict(m.meta)) for m in members)
    return out


async def test_metadata_and_diffs_cross_nodes(redis: str, prefix: str) -> None:
    """A join with metadata, its update and the leave reach the other node's watcher and snapshot."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        on_b = Watcher()
        with b.hub.watch_presence(on_b):
            async with b.connect("bob", "r"), a.connect("ann"):
                await on_b.until(1)  # bob's own join, at once
                ann = a.clients["ann"]
                a.hub.join(ann, "r", meta={"status": "here"})
                await on_b.until(2)
                await a.hub.presence("r")  # a's records are in Redis
                state = await b.hub.presence_state("r")
                assert [(m.client_id, m.node_id, dict(m.meta)) for m in state] == [
                    ("bob", b.hub.node_id, {}),
                    ("ann", a.hub.node_id, {"status": "here"}),
                ]
                assert state[0].seq < state[1].seq
                a.hub.update_presence(ann, "r", {"status": "away"})
                await on_b.until(3)
                await a.hub.presence("r")
                assert [dict(m.meta) for m in await b.hub.presence_state("r")] == [{}, {"status": "away"}]
                assert await b.hub.presence("r") == ["bob", "ann"]  # names, as before
                a.hub.leave(ann, "r")
                await on_b.until(4)
        assert summary(on_b.diffs[:4]) == [
            ("join", "r", "bob", {}),
            ("join", "r", "ann", {"status": "here"}),
            ("update", "r", "ann", {"status": "away"}),
            ("leave", "r", "ann", {"status": "away"}),
        ]
        assert on_b.diffs[1].joins[0].node_id == a.hub.node_id


async def test_members_of_a_node_that_died_leave_on_every_node_watching_their_room(
    redis: str, prefix: str
) -> None:
    """The reaper reports a dead node's members as leaves, with their metadata, to every node in the room."""
    async with open_node(redis, prefix, **FAST) as a, open_node(redis, prefix, **FAST) as c:
        on_a, on_c = Watcher(), Watcher()
        with a.hub.watch_presence(on_a), c.hub.watch_presence(on_c):
            async with a.connect("ann", "r"), c.connect("cid", "r"):
                b = Node(RedisBroker(redis, prefix=prefix, **FAST, close_timeout=1e-9))
                release = trio.Event()
                async with (
                    open_memory_server(b.handler, heartbeat=None) as b.server,
                    trio.open_nursery() as n,
                ):
                    async with b.hub:
                        await n.start(hold, b, "bob", (), release)
                        b.hub.join(b.clients["bob"], "r", meta={"device": "phone"})
                        await b.hub.presence("r")
                        await on_a.until(3)  # ann, cid (from c) and bob (from b)
                    release.set()
                # One on each node: the reaper's own, and the one it published to the other.
                for watcher in (on_a, on_c):
                    diff = await watcher.left("bob")
                    seq = diff.leaves[0].seq
                    expected = Member("r", b.hub.node_id, "bob", "bob", seq, {"device": "phone"})
                    assert diff == PresenceDiff("r", leaves=(expected,))
                assert len(a.expired) + len(c.expired) == 1


async def test_a_watcher_relays_remote_diffs_to_local_members_only(redis: str, prefix: str) -> None:
    """Each node tells its own members with broadcast_local_nowait; nothing is relayed twice."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:

        def relay(node: Node) -> Callable[[PresenceDiff], None]:
            def on_diff(diff: PresenceDiff) -> None:
                for member in diff.joins:
                    node.hub.broadcast_local_nowait(diff.room, f"joined {member.client_id}")

            return on_diff

        with a.hub.watch_presence(relay(a)), b.hub.watch_presence(relay(b)):
            async with a.connect("ann", "r") as ann, b.connect("bob", "r") as bob:
                await expect_message(ann, "joined ann", timeout=PATIENCE)
                await expect_message(ann, "joined bob", timeout=PATIENCE)
                await expect_message(bob, "joined bob", timeout=PATIENCE)
                async with a.connect("al", "r"):
                    await expect_message(ann, "joined al", timeout=PATIENCE)
                    await expect_message(bob, "joined al", timeout=PATIENCE)
