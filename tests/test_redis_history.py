"""Rooms with history on RedisBroker, against a real redis-server: positions and recovery across nodes."""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import coredis
import pytest
import trio
import trio.testing

import trionos
from tests.redis_server import private_redis_server
from trionos._broker import encode_history_head
from trionos._redis import RedisBroker
from trionos._redis_history import StreamHistory
from trionos._redis_link import Link
from trionos.testing import expect_message, open_memory_server

PATIENCE = 5.0


@attrs.frozen
class Note:
    text: str


CODEC: trionos.Codec[Any] = trionos.Codec(Note)
BOUNDS = trionos.HistoryBounds(max_messages=50, max_age=60.0)


class Node:
    """A hub with history on a RedisBroker; a connection to ``/name-n`` is a client of identity ``name``."""

    def __init__(self, broker: RedisBroker, epoch_field: str | None = None) -> None:
        self.broker = broker
        self.hub = trionos.Hub(broker=broker, codec=CODEC, history=BOUNDS, epoch_field=epoch_field)
        self.server: Any = None
        self.clients: dict[str, trionos.Client] = {}
        self._registered = trio.Event()

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        path = req.path.strip("/")
        async with self.hub.client(ws, client_id=path, identity=path.split("-")[0]) as client:
            self.clients[path] = client
            self._registered.set()
            self._registered = trio.Event()
            async for _ in ws:
                pass

    @asynccontextmanager
    async def connect(
        self, path: str, room: str = "r", since: trionos.Position | None = None
    ) -> AsyncIterator[tuple[trionos.WebSocket, trionos.Recovery]]:
        """Connect ``/path`` and join ``room`` with history at ``since``."""
        async with self.server.connect("/" + path, message_queue_size=256) as ws:
            while path not in self.clients:
                await self._registered.wait()
            recovery = await self.hub.join_with_history(self.clients[path], room, since=since)
            yield ws, recovery


@asynccontextmanager
async def open_node(
    url: str, prefix: str, *, epoch_field: str | None = None, **options: Any
) -> AsyncIterator[Node]:
    node = Node(RedisBroker(url, prefix=prefix, **options), epoch_field)
    async with node.hub, open_memory_server(node.handler, heartbeat=None) as server:
        node.server = server
        yield node


async def broadcast_once_redis_is_back(node: Node, note: Note) -> trionos.Sent:
    """Broadcast *note* into room "r", retrying while the broker is still reconnecting."""
    with trio.fail_after(PATIENCE):
        while True:
            try:
                return await node.hub.broadcast("r", note)
            except trionos.BrokerError:
                await trio.sleep(0.05)  # polling until the broker is back


async def texts(ws: trionos.WebSocket, n: int, *, patience: float = PATIENCE) -> list[tuple[str, int]]:
    """The next ``n`` notes as (text, offset), within ``patience`` seconds (a hang guard, not a measure)."""
    got = []
    with trio.fail_after(patience):
        for _ in range(n):
            message = json.loads(await ws.recv())
            got.append((message["text"], message["offset"]))
    return got


async def test_a_client_recovers_on_another_node_exactly_once(redis: str, prefix: str) -> None:
    """Offsets come from Redis; a client that moves to another node gets what it missed, once, in order."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with b.connect("bob-1") as (bob, _):
            async with a.connect("ann-1") as (ann, first):
                assert first.position.offset == 0
                sent = await b.hub.broadcast("r", Note("one"), exclude=b.clients["bob-1"])
                assert sent.position == trionos.Position(first.position.epoch, 1)
                assert await texts(ann, 1) == [("one", 1)]
                mine = await a.hub.broadcast("r", Note("mine"), exclude=a.clients["ann-1"])
                assert await texts(bob, 1) == [("mine", 2)]
            for text in ("two", "three"):
                await b.hub.broadcast("r", Note(text))
            assert await texts(bob, 2) == [("two", 3), ("three", 4)]
            assert mine.position is not None
            async with b.connect("ann-2", since=trionos.Position(mine.position.epoch, 1)) as (ann, back):
                assert back.complete and back.position.offset == 4
                await b.hub.broadcast("r", Note("four"))
                # "mine" excluded ann: never replayed to the identity "ann".
                assert await texts(ann, 3) == [("two", 3), ("three", 4), ("four", 5)]
    assert b.hub.metrics.recoveries_complete == 1


async def test_no_gap_and_no_duplicate_while_another_node_broadcasts_during_the_join(
    redis: str, prefix: str
) -> None:
    """Messages racing with a recovering join on another node arrive exactly once, in offset order."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with a.connect("keeper") as (_, start):
            done = trio.Event()

            async def flood() -> None:
                for i in range(60):
                    await a.hub.broadcast("r", Note(str(i)))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                async with b.connect("ann", since=start.position) as (ann, _):
                    await done.wait()
                    offsets = [offset for _, offset in await texts(ann, 60)]
    assert offsets == list(range(1, 61)), repr(offsets)


async def test_a_join_with_the_last_messages_on_another_node_while_one_floods(
    redis: str, prefix: str
) -> None:
    """join_with_history(last=N) on another node: the last N (its own too), then live, exactly once."""
    async with open_node(redis, prefix) as a, open_node(redis, prefix) as b:
        async with a.connect("ann-1") as (_, start):
            for i in range(5):
                await a.hub.broadcast("r", Note(f"old {i}"), exclude=a.clients["ann-1"])
            done = trio.Event()

            async def flood() -> None:
                for i in range(40):
                    await a.hub.broadcast("r", Note(str(i)))
                done.set()

            async with b.server.connect("/ann-2", message_queue_size=256) as ann:
                while "ann-2" not in b.clients:
                    await b._registered.wait()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    recovery = await b.hub.join_with_history(b.clients["ann-2"], "r", last=3)
                    await done.wait()
                latest = recovery.position.offset
                assert latest >= 5 and recovery.complete and recovery.position.epoch == start.position.epoch
                got = await texts(ann, 45 - latest + 3)
                assert [offset for _, offset in got] == list(range(latest - 2, 46)), repr(got)
                assert [e.offset for e in recovery.entries] == list(range(latest - 2, latest + 1))
    assert b.hub.metrics.messages_replayed == 3


async def test_a_restarted_node_keeps_continuity_and_a_flushed_redis_changes_the_epoch(prefix: str) -> None:
    """The epoch lives in Redis: a new node process recovers old positions; FLUSHALL starts a new epoch."""
    with private_redis_server() as server:
        async with open_node(server.url, prefix) as a, a.connect("ann") as (_, joined):
            for i in range(3):
                await a.hub.broadcast("r", Note(str(i)))
        async with open_node(server.url, prefix) as restarted:
            position = trionos.Position(joined.position.epoch, 1)
            async with restarted.connect("bob", since=position) as (bob, recovery):
                assert recovery.complete and recovery.position.epoch == joined.position.epoch
                assert await texts(bob, 2) == [("1", 2), ("2", 3)]
            async with coredis.Redis.from_url(server.url) as client:
                await client.flushall()
            async with restarted.connect("cat", since=position) as (_, flushed):
                assert not flushed.complete and flushed.position.epoch != joined.position.epoch
                assert flushed.entries == ()


async def test_while_redis_is_unreachable_rooms_with_history_refuse_and_recover_after(prefix: str) -> None:
    """No position without Redis: broadcast and join_with_history raise BrokerError; after the restart
    (an empty Redis) there is a new epoch, and an old position is reported as partial."""
    with private_redis_server() as server:
        options: dict[str, Any] = {"operation_timeout": 0.5, "reconnect_max_delay": 0.1}
        async with open_node(server.url, prefix, **options) as a, a.connect("ann") as (ann, joined):
            await a.hub.broadcast("r", Note("before"))
            assert await texts(ann, 1) == [("before", 1)]
            await trio.to_thread.run_sync(server.stop)
            with pytest.raises(trionos.BrokerError, match="Redis"):
                await a.hub.broadcast("r", Note("during"))
            async with a.server.connect("/bob") as _:
                while "bob" not in a.clients:
                    await a._registered.wait()
                with pytest.raises(trionos.BrokerError, match="Redis"):
                    await a.hub.join_with_history(a.clients["bob"], "r", since=joined.position)
                assert "r" not in a.hub.rooms_of(a.clients["bob"])
            await trio.to_thread.run_sync(server.start)
            sent = await broadcast_once_redis_is_back(a, Note("after"))
            assert sent.position is not None and sent.position.epoch != joined.position.epoch
            await expect_message(ann, {"type": "note", "text": "after", "offset": 1}, timeout=PATIENCE)
            async with a.connect("cat", since=trionos.Position(joined.position.epoch, 1)) as (_, late):
                assert not late.complete
    assert a.broker.metrics.broker_reconnects >= 1


async def test_a_member_that_just_joined_receives_a_history_broadcast_live(redis: str, prefix: str) -> None:
    """A broadcast right after a plain join waits for the node's subscription: the new member gets it."""
    async with open_node(redis, prefix) as a:
        async with a.server.connect("/ann-1", message_queue_size=16) as ann:
            while "ann-1" not in a.clients:
                await a._registered.wait()
            for n, room in enumerate(("fresh", "fresher"), start=1):
                assert a.hub.join(a.clients["ann-1"], room)
                sent = await a.hub.broadcast(room, Note(f"hello {n}"))
                assert sent == 1 and sent.position is not None and sent.position.offset == 1
                assert await texts(ann, 1) == [(f"hello {n}", 1)]


async def test_a_join_without_a_position_reads_no_entry(redis: str, prefix: str) -> None:
    """Joining at the latest position answers the offset and replays nothing, however long the history."""
    async with open_node(redis, prefix) as a:
        for n in range(5):
            await a.hub.broadcast("r", Note(f"n{n}"))
        async with a.connect("ann-1") as (ann, recovery):
            assert recovery.position.offset == 5 and recovery.entries == () and recovery.complete
            await a.hub.broadcast("r", Note("live"))
            assert await texts(ann, 1) == [("live", 6)]


async def script_calls(probe: Any) -> int:
    """How many Lua scripts Redis has run so far (EVAL and EVALSHA)."""
    stats = await probe.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))


async def test_recoveries_that_arrive_together_share_a_few_reads(redis: str, prefix: str) -> None:
    """Fifty clients back at once, at different positions, each get what they missed, from a few reads."""
    async with (
        open_node(redis, prefix) as a,
        coredis.Redis.from_url(redis) as probe,
        AsyncExitStack() as stack,
    ):
        for n in range(1, 21):
            sent = await a.hub.broadcast("r", Note(f"n{n}"))
        assert sent.position is not None
        epoch = sent.position.epoch
        sockets = [
            await stack.enter_async_context(a.server.connect(f"/u{i}-1", message_queue_size=64))
            for i in range(50)
        ]
        while len(a.clients) < 50:
            await a._registered.wait()
        since = {i: trionos.Position(epoch, i % 20) for i in range(49)}
        since[49] = trionos.Position("another epoch", 3)
        recoveries: dict[int, trionos.Recovery] = {}

        async def come_back(i: int) -> None:
            recoveries[i] = await a.hub.join_with_history(a.clients[f"u{i}-1"], "r", since=since[i])

        before = await script_calls(probe)
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(come_back, i)
        assert await script_calls(probe) - before <= 3
        for i in range(49):
            assert recoveries[i].complete and recoveries[i].position.offset == 20
            assert [e.offset for e in recoveries[i].entries] == list(range(i % 20 + 1, 21))
        assert not recoveries[49].complete and len(recoveries[49].entries) == 20
        for i in (0, 7, 48, 49):
            expected = list(range(i % 20 + 1 if i < 49 else 1, 21))
            assert [offset for _, offset in await texts(sockets[i], len(expected))] == expected


async def test_offsets_skipped_by_the_subscription_are_counted_as_gaps(redis: str, prefix: str) -> None:
    """A history message the subscription missed shows as a jump in offsets: counted, and recoverable."""
    async with open_node(redis, prefix) as a, coredis.Redis.from_url(redis) as probe:
        async with a.connect("ann-1") as (ann, _):
            sent = await a.hub.broadcast("r", Note("one"))
            assert sent.position is not None
            assert await texts(ann, 1) == [("one", 1)]
            # As if offsets 2 and 3 had been published while the subscription was reconnecting.
            head = encode_history_head("elsewhere", None, binary=False)
            tail = f'{sent.position.epoch}\n4\n{{"type":"note","text":"four","offset":4}}'.encode()
            await probe.publish(f"{prefix}:room:r", head + tail)
            assert await texts(ann, 1) == [("four", 4)]
            assert a.broker.history_gaps == 2


class HeldRedis:
    """A stand-in coredis client whose scripts wait until released; counts them."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.calls: list[list[Any]] = []
        self.release = trio.Event()

    async def eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        self.calls.append(args)
        await self.release.wait()
        rows = [
            (f"{1000 + n}-{n}".encode(), [b"p", f'{{"offset":{n}}}'.encode(), b"x", b"", b"k", b"t"])
            for n in range(self.last, 0, -1)
        ]
        return [b"e1", self.last, rows]


async def test_a_cancelled_recovery_leaves_the_shared_read_to_the_others() -> None:
    """Recoveries that arrive together share one read; one cancelled while it waits does not fail it."""
    client = HeldRedis(last=5)
    history = StreamHistory(
        Link("redis://test", 2.0, trionos.Metrics(), client=client, connected=True), "p", trionos.Metrics()
    )
    results: dict[str, trionos.Recovery] = {}

    async def recover(name: str, since: trionos.Position | None, scope: trio.CancelScope) -> None:
        with scope:
            results[name] = await history.recover("r", since, None, bounds=BOUNDS, epoch="new")

    async with trio.open_nursery() as nursery:
        history.nursery = nursery
        cancelled = trio.CancelScope()
        nursery.start_soon(recover, "a", trionos.Position("e1", 2), cancelled)
        nursery.start_soon(recover, "b", trionos.Position("e1", 3), trio.CancelScope())
        nursery.start_soon(recover, "c", None, trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        assert len(client.calls) == 1  # one read for the three, started at once
        nursery.start_soon(recover, "d", trionos.Position("e1", 4), trio.CancelScope())
        nursery.start_soon(recover, "e", trionos.Position("e0", 1), trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        assert len(client.calls) == 1  # d and e wait for the read in flight, together
        cancelled.cancel()
        await trio.testing.wait_all_tasks_blocked()
        client.release.set()
    assert cancelled.cancelled_caught and "a" not in results
    assert client.calls[0][2:] == ["e1", 2, 1, 0]  # as far back as the oldest of a, b and c needs
    assert len(client.calls) == 2 and client.calls[1][2:] == ["", -1, 1, 0]  # e's epoch differs: all
    assert [e.offset for e in results["b"].entries] == [4, 5] and results["b"].complete
    assert results["c"].entries == () and results["c"].position == trionos.Position("e1", 5)
    assert [e.offset for e in results["d"].entries] == [5] and results["d"].complete
    assert [e.offset for e in results["e"].entries] == [1, 2, 3, 4, 5] and not results["e"].complete


async def test_a_stalled_member_holds_a_history_room_for_grace_then_readers_miss_nothing(
    redis: str, prefix: str
) -> None:
    """Senders into a Redis history room wait for the room's feed, as in memory: no reader loses a message."""
    async with open_node(redis, prefix) as a:
        a.hub.grace = 0.5
        async with a.connect("ann-1") as (ann, _), a.connect("bob-1") as (bob, _):
            # bob never reads: his outbox and the room's feed fill, and the room waits for him.

            async def send(sender: int) -> None:
                for n in range(100):
                    await a.hub.broadcast("r", Note(f"{sender}-{n}" + "x" * 2000))

            async with trio.open_nursery() as nursery:
                for sender in range(10):
                    nursery.start_soon(send, sender)
                # 1,000 messages of 2 KB through Redis: on a loaded two-core machine, under
                # coverage, this took over 5 s (before this branch too); 60 s only guards a hang.
                got = await texts(ann, 1000, patience=60)
            assert [offset for _, offset in got] == list(range(1, 1001))
            assert a.hub.metrics.remote_frames_dropped == 0
            assert a.hub.metrics.slow_client_disconnects == 1
            # The senders' bookkeeping lasts only while broadcasts are in flight: nothing is left
            # per room once they are all delivered (rooms come and go; the hub must not grow).
            assert a.hub._shared_history.idle
            with trio.fail_after(PATIENCE):
                while True:
                    try:
                        await bob.recv()
                    except trionos.ConnectionClosed as closed:
                        # 1008, or a bare end of stream when the close frame found the memory
                        # pipe to bob (who never reads) full and was dropped.
                        assert closed.code in (1008, 1006)
                        break


async def test_history_in_redis_is_bounded_by_bytes_and_counts_what_it_trims(redis: str, prefix: str) -> None:
    """A room's stream keeps at most max_bytes of payloads; a recovery from the start is partial."""
    bounds = trionos.HistoryBounds(max_messages=50, max_age=60.0, max_bytes=1000)
    async with open_node(redis, prefix) as a, coredis.Redis.from_url(redis) as probe:
        a.hub.set_room_history("r", bounds)
        for n in range(10):
            await a.hub.broadcast("r", Note(f"{n}" * 300))  # 336 bytes each, offset stamped in
        meta, stream = f"{prefix}:history:r:meta", f"{prefix}:history:r"
        kept = await probe.xrange(stream)
        size = sum(len(entry.field_values[b"p"]) for entry in kept)
        assert len(kept) == 2 and size <= 1000
        assert int(await probe.hget(meta, "bytes") or 0) == size
        assert a.broker.metrics.history_trimmed == 8
        epoch = (await probe.hget(meta, "epoch") or b"").decode()
        async with a.connect("ann", since=trionos.Position(epoch, 0)) as (_, recovery):
            assert not recovery.complete and [e.offset for e in recovery.entries] == [9, 10]


async def test_a_join_of_a_room_without_messages_leaves_only_expiring_keys(redis: str, prefix: str) -> None:
    """The meta hash a join starts expires (after max_age, or an hour without one); a message's keys too."""
    async with open_node(redis, prefix) as a, coredis.Redis.from_url(redis) as probe:
        async with a.connect("ann", room="quiet"):
            pass
        assert 0 < await probe.pttl(f"{prefix}:history:quiet:meta") <= 60_000
        a.hub.set_room_history("forever", trionos.HistoryBounds(max_age=None))
        async with a.connect("bob", room="forever"):
            pass
        assert 59 * 60_000 < await probe.pttl(f"{prefix}:history:forever:meta") <= 3_600_000
        await a.hub.broadcast("forever", Note("kept"))  # kept for good: no age bound
        assert await probe.pttl(f"{prefix}:history:forever:meta") == -1


@asynccontextmanager
async def answer_holding_proxy(redis_url: str) -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """A loopback TCP proxy to Redis that forwards requests at once and, once the yielded function
    is called, holds the answers until the block ends (Redis ran the command; its answer is late)."""
    target = urllib.parse.urlsplit(redis_url)
    host, port = target.hostname or "127.0.0.1", target.port or 6379
    release = trio.Event()
    hold = [False]

    async def pipe(source: trio.SocketStream, sink: trio.SocketStream, answers: bool) -> None:
        async for data in source:
            if answers and hold[0]:
                await release.wait()
            await sink.send_all(data)

    async def relay(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream(host, port) as server, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, server, False)
            await pipe(server, client, True)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
        proxy_port = listeners[0].socket.getsockname()[1]

        def hold_answers() -> None:
            hold[0] = True

        yield f"redis://127.0.0.1:{proxy_port}", hold_answers
        release.set()
        nursery.cancel_scope.cancel()


async def test_a_broadcast_redis_answers_too_late_is_reported_uncertain_not_unsent(
    redis: str, prefix: str
) -> None:
    """When Redis keeps a broadcast but answers after the timeout, the sender hears BrokerUncertain."""
    async with answer_holding_proxy(redis) as (url, hold), open_node(url, prefix, operation_timeout=0.3) as a:
        async with a.connect("ann"):
            await a.hub.broadcast("r", Note("before"))
            hold()
            with pytest.raises(trionos.BrokerUncertain, match="did not answer in time"):
                await a.hub.broadcast("r", Note("late"))
    async with coredis.Redis.from_url(redis) as probe:
        assert await probe.xlen(f"{prefix}:history:r") == 2  # it was kept (and published)


async def shown_by(positions: trionos.Positions, ws: trionos.WebSocket, n: int) -> list[str]:
    """The next ``n`` notes that ``positions`` says are new, as ``text@epoch:offset``."""
    shown: list[str] = []
    with trio.fail_after(PATIENCE):
        while len(shown) < n:
            note = json.loads(await ws.recv())
            if positions.receive("r", note["offset"], note["epoch"]):
                shown.append(f"{note['text']}@{note['epoch']}:{note['offset']}")
    return shown


async def test_a_live_client_sees_the_new_epoch_after_a_redis_restart(prefix: str) -> None:
    """A Redis restart without persistence restarts the offsets; the live client shows every message."""
    with private_redis_server() as server:
        options: dict[str, Any] = {"operation_timeout": 0.5, "reconnect_max_delay": 0.1}
        async with (
            open_node(server.url, prefix, epoch_field="epoch", **options) as a,
            a.connect("ann") as (
                ann,
                joined,
            ),
        ):
            positions = trionos.Positions()
            positions.welcome("r", joined.position, None)
            first = joined.position.epoch
            for text in ("one", "two"):
                await a.hub.broadcast("r", Note(text))
            assert await shown_by(positions, ann, 2) == [f"one@{first}:1", f"two@{first}:2"]
            await trio.to_thread.run_sync(server.stop)
            await trio.to_thread.run_sync(server.start)
            sent = await broadcast_once_redis_is_back(a, Note("three"))
            assert sent.position is not None and sent.position.epoch != first
            second = sent.position.epoch
            await a.hub.broadcast("r", Note("four"))
            # "three" may be lost live (the subscription was coming back): then "four" shows the
            # new epoch with a gap before it, and a rejoin replays "three".
            shown = await shown_by(positions, ann, 1)
            if (since := positions.recovery_due("r")) is not None:
                assert since == trionos.Position(second, 0) and shown == [f"four@{second}:2"]
                recovery = await a.hub.join_with_history(a.clients["ann"], "r", since=since)
                assert recovery.complete
                shown += await shown_by(positions, ann, 1)
                assert shown == [f"four@{second}:2", f"three@{second}:1"]
            else:
                shown += await shown_by(positions, ann, 1)
                assert shown == [f"three@{second}:1", f"four@{second}:2"]  # not dropped as seen
            assert positions.since("r") == trionos.Position(second, 2)


async def test_a_live_client_recovers_a_message_its_subscription_missed(redis: str, prefix: str) -> None:
    """Offsets kept in Redis but never delivered live: the gap is noticed, a rejoin fills it once."""
    async with open_node(redis, prefix, epoch_field="epoch") as a, coredis.Redis.from_url(redis) as probe:
        async with a.connect("ann-1") as (ann, joined):
            positions = trionos.Positions()
            positions.welcome("r", joined.position, None)
            sent = await a.hub.broadcast("r", Note("one"))
            assert sent.position is not None
            epoch = sent.position.epoch
            assert await shown_by(positions, ann, 1) == [f"one@{epoch}:1"]
            # Kept in Redis but published where nobody listens: as lost by a dropped subscription.
            elsewhere = StreamHistory(
                Link(redis, 2.0, trionos.Metrics(), client=probe, connected=True), prefix, trionos.Metrics()
            )
            for text in ("two", "three"):
                await elsewhere.append(
                    "r",
                    CODEC.encode(Note(text)),
                    channel=b"nobody-listens",
                    head=encode_history_head("elsewhere", None, binary=False),
                    exclude_identity=None,
                    bounds=BOUNDS,
                    offset_member='"epoch":\n"offset":',
                    epoch=epoch,
                )
            await a.hub.broadcast("r", Note("four"))
            assert await shown_by(positions, ann, 1) == [f"four@{epoch}:4"]
            since = positions.recovery_due("r")
            assert since == trionos.Position(epoch, 1)
            recovery = await a.hub.join_with_history(a.clients["ann-1"], "r", since=since)
            assert recovery.complete
            assert await shown_by(positions, ann, 2) == [f"two@{epoch}:2", f"three@{epoch}:3"]
            await a.hub.broadcast("r", Note("five"))
            assert await shown_by(positions, ann, 1) == [f"five@{epoch}:5"]  # four was not shown twice
            assert positions.since("r") == trionos.Position(epoch, 5)
