"""The hub end to end over loopback: load, slow clients, encode-once, and usage errors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import CountingCodec, Registered, ServeFn, raw_websocket_peer, room_handler
from trionos.testing import open_memory_server


@pytest.fixture
async def hub(nursery: trio.Nursery) -> AsyncIterator[trionos.Hub]:
    yield await nursery.start(trionos.Hub().run)


async def test_300_clients_by_50_messages_nothing_lost(hub: trionos.Hub, start_server: ServeFn) -> None:
    """300 clients in one room each receive all 50 messages from 10 senders, per-sender in order."""
    registered = Registered()
    server = await start_server(room_handler(hub, registered))
    received: dict[int, list[str | bytes]] = {}
    done = trio.Event()

    async def listener(n: int) -> None:
        async with trionos.connect(f"{server.url}/c{n}", message_queue_size=64) as ws:
            messages: list[str | bytes] = []
            received[n] = messages
            while len(messages) < 50:
                messages.append(await ws.recv())
            if sum(len(m) == 50 for m in received.values()) == 300:
                done.set()
            await done.wait()

    async def sender(k: int) -> None:
        async with trionos.connect(f"{server.url}/s{k}") as ws:
            await registered.wait_for(count=310)
            for i in range(5):
                await ws.send(f"{k}:{i}")
            await done.wait()

    # A guard, not a timed assertion: if a wait never ends, say where it stands instead of hanging.
    with trio.move_on_after(120) as guard:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(listener, n)
            for k in range(10):
                nursery.start_soon(sender, k)
    assert not guard.cancelled_caught, (
        f"stuck: {len(registered)} of 310 registered, "
        f"{sum(len(m) == 50 for m in received.values())} of 300 listeners done, "
        f"message counts {sorted({len(m) for m in received.values()})}, "
        f"slow clients dropped {hub.slow_clients_dropped}, metrics {hub.metrics}"
    )
    for messages in received.values():
        assert len(messages) == 50
        for k in range(10):
            assert [m for m in messages if str(m).startswith(f"{k}:")] == [f"{k}:{i}" for i in range(5)]


async def run_flood(
    hub: trionos.Hub, start_server: ServeFn, *, total: int, size: int
) -> tuple[Registered, list[list[int]], trionos.WebSocket, trio.SocketStream]:
    registered = Registered()
    server = await start_server(room_handler(hub, registered), max_outbox_bytes=256 * 1024)
    stalled = await raw_websocket_peer(server.port, "/stalled")  # it never reads
    await registered.wait_for("/stalled")
    stalled_ws = registered["/stalled"].ws
    assert isinstance(stalled_ws, trionos.WebSocket)
    results: list[list[int]] = []

    async def reader(ready: trio.Event) -> None:
        async with trionos.connect(f"{server.url}/reader{len(results)}", message_queue_size=16) as ws:
            seen: list[int] = []
            results.append(seen)
            ready.set()
            while not seen or seen[-1] != total - 1:
                message = await ws.recv()
                assert isinstance(message, bytes) and len(message) == size
                seen.append(int.from_bytes(message[:4], "big"))

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            ready = trio.Event()
            nursery.start_soon(reader, ready)
            await ready.wait()
        await registered.wait_for(count=3)
        payload = b"x" * (size - 4)
        for i in range(total):
            await hub.broadcast("room", i.to_bytes(4, "big") + payload)
    return registered, results, stalled_ws, stalled


async def test_stalled_client_is_disconnected_while_others_get_48_mib(
    nursery: trio.Nursery, start_server: ServeFn
) -> None:
    """With `disconnect`, a client that never reads is closed (1008) after the grace period,
    the others receive all 48 MiB in order, and its outbox never exceeds the bound."""
    # Grace 3 s, not 1: on a loaded machine (coverage, two cores) a reader that keeps up can
    # still be descheduled long enough to add up to a second of stalls and be closed with the
    # stalled client. The stalled one never reads, so it is closed whatever the grace.
    hub = await nursery.start(trionos.Hub(grace=3.0).run)
    size = 64 * 1024
    total = 48 * 1024 * 1024 // size
    _, results, stalled_ws, stalled = await run_flood(hub, start_server, total=total, size=size)
    assert results == [list(range(total))] * 2
    assert stalled_ws.close_code == 1008
    assert "slow client" in (stalled_ws.close_reason or "")
    assert hub.slow_clients_dropped == 1
    assert stalled_ws.transport.peak_outbox_bytes <= 256 * 1024 + size + 16
    with trio.fail_after(10):  # the peer sees the TCP connection end after the buffered bytes
        while await stalled.receive_some(1 << 20):
            pass


async def test_drop_oldest_never_waits_and_keeps_the_bound(
    nursery: trio.Nursery, start_server: ServeFn
) -> None:
    """With `drop_oldest`, a stalled client stays connected, loses old frames, and stays bounded;
    readers get an in-order subsequence that always ends with the newest message."""
    hub = await nursery.start(trionos.Hub(policy="drop_oldest", grace=0.5).run)
    size = 64 * 1024
    total = 16 * 1024 * 1024 // size
    _, results, stalled_ws, stalled = await run_flood(hub, start_server, total=total, size=size)
    for seen in results:
        assert seen == sorted(set(seen)) and seen[-1] == total - 1
    assert not stalled_ws.closed
    assert stalled_ws.transport.dropped_frames > 0
    assert hub.metrics.frames_dropped >= stalled_ws.transport.dropped_frames  # readers may drop too
    assert stalled_ws.transport.peak_outbox_bytes <= 256 * 1024 + size + 16
    assert hub.slow_clients_dropped == 0
    await stalled.aclose()


async def test_typed_broadcast_is_encoded_once(hub: trionos.Hub, start_server: ServeFn) -> None:
    """A typed message to many recipients is encoded once; everyone but the excluded gets it."""
    registered = Registered()
    server = await start_server(room_handler(hub, registered))
    codec = CountingCodec()
    async with (
        trionos.connect(server.url + "/a") as a,
        trionos.connect(server.url + "/b") as b,
        trionos.connect(server.url + "/c") as c,
    ):
        await registered.wait_for(count=3)
        sent = await hub.broadcast("room", 42, exclude=registered["/a"], codec=codec)
        assert sent == 2 and codec.encoded == 1
        assert await b.recv() == "typed:42"
        assert await c.recv() == "typed:42"
        await a.send("from a")
        assert await b.recv() == "from a"
        assert await c.recv() == "from a"


async def test_usage_errors(hub: trionos.Hub) -> None:
    """Typed broadcasts need a codec, and a hub that is not running says so."""
    with pytest.raises(TypeError, match="without a codec"):
        await hub.broadcast("room", object())
    with pytest.raises(RuntimeError, match="the hub is not running"):
        trionos.Hub()._require_nursery()
    assert await hub.broadcast("nobody-here", "x") == 0
    assert await hub.presence("nobody-here") == [] and hub.members("nobody-here") == []


async def test_a_broadcast_arrives_before_a_direct_send_made_after_it(
    hub: trionos.Hub, start_server: ServeFn
) -> None:
    """Broadcasts are written by the room's fan-out, yet program order holds per connection."""
    registered = Registered()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            hub.join(client, "room")
            registered.add(req.path, client)
            async for message in ws:
                assert isinstance(message, str)
                await hub.broadcast("room", f"room:{message}")
                await ws.send(f"direct:{message}")
                await registered["/b"].ws.send(f"to-b:{message}")

    server = await start_server(handler)
    async with trionos.connect(server.url + "/a") as a, trionos.connect(server.url + "/b") as b:
        await registered.wait_for("/a", "/b")
        for i in range(20):
            await a.send(str(i))
        for i in range(20):
            assert [await a.recv(), await a.recv()] == [f"room:{i}", f"direct:{i}"]
            assert [await b.recv(), await b.recv()] == [f"room:{i}", f"to-b:{i}"]


async def test_what_a_leaving_client_was_sent_goes_out_before_its_close(
    hub: trionos.Hub, start_server: ServeFn
) -> None:
    """A handler that broadcasts and returns: the broadcast reaches its own client before 1000."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            hub.join(client, "room")
            await ws.recv()
            for i in range(5):
                await hub.broadcast("room", f"farewell {i}")

    server = await start_server(handler)
    async with trionos.connect(server.url) as ws:
        await ws.send("bye")
        assert [m async for m in ws] == [f"farewell {i}" for i in range(5)]
        assert ws.close_code == 1000


async def test_waiting_for_room_writes_at_once_when_the_outbox_has_room(
    hub: trionos.Hub, start_server: ServeFn
) -> None:
    """A client that drained its outbox while the fan-out waited for another is written, not dropped."""
    registered = Registered()
    server = await start_server(room_handler(hub, registered))
    async with trionos.connect(server.url + "/reader") as ws:
        await registered.wait_for("/reader")
        with trio.testing.assert_no_checkpoints():
            await hub._delivery.wait_for_room(registered["/reader"], hub.encode("caught up"))
        assert await ws.recv() == "caught up"
    assert hub.slow_clients_dropped == 0


async def test_registration_errors(hub: trionos.Hub, start_server: ServeFn) -> None:
    """A taken id, a second entry of the same registration, and joining unregistered all refuse."""
    outcomes: list[str] = []
    done = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        registration = hub.client(ws, client_id="ann")
        with pytest.raises(ValueError, match="not registered"):
            hub.join(registration, "room")
        async with registration as client:
            with pytest.raises(RuntimeError, match="already registered"):
                await registration.__aenter__()
            async with hub.client(ws, client_id="bob"):
                with pytest.raises(ValueError, match="'bob' is already registered"):
                    await hub.client(ws, client_id="bob").__aenter__()
            outcomes.append(client.id)
        assert hub.get("ann") is None
        done.set()

    server = await start_server(handler)
    async with trionos.connect(server.url):
        await done.wait()
    assert outcomes == ["ann"]


async def test_clients_is_a_live_read_only_view(hub: trionos.Hub, start_server: ServeFn) -> None:
    """``hub.clients`` follows registrations as they happen and cannot be written through."""
    view = hub.clients
    registered = Registered()
    server = await start_server(room_handler(hub, registered))
    assert dict(view) == {}
    async with trionos.connect(server.url + "/a"):
        await registered.wait_for("/a")
        assert dict(view) == {registered["/a"].id: registered["/a"]}
        assert hub.clients is view
        with pytest.raises(TypeError):
            view["intruder"] = registered["/a"]  # type: ignore[index]  # the point: it is read-only
    while view:
        await trio.testing.wait_all_tasks_blocked()
    assert hub.clients == {}


async def test_exiting_a_hub_that_was_not_entered_says_so() -> None:
    """``__aexit__`` without ``__aenter__`` is a usage error, not an AttributeError."""
    with pytest.raises(RuntimeError, match="not entered"):
        await trionos.Hub().__aexit__(None, None, None)


def test_memory_broker_is_a_deprecated_alias_of_local_broker() -> None:
    """The old name still works for one release, warns, and is no longer exported."""
    expected = r"MemoryBroker is deprecated.*use trionos.LocalBroker"
    with pytest.warns(trionos.TrionosDeprecationWarning, match=expected):
        alias = trionos.MemoryBroker
    assert alias is trionos.LocalBroker
    assert "MemoryBroker" not in trionos.__all__
    assert isinstance(trionos.Hub().broker, trionos.LocalBroker)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"grace": -1}, ValueError, "Hub grace must be a positive, finite number of seconds, got -1"),
        ({"grace": 0}, ValueError, "Hub grace must be a positive, finite number of seconds, got 0"),
        (
            {"grace": float("inf")},
            ValueError,
            "Hub grace must be a positive, finite number of seconds, got inf",
        ),
        ({"grace": "2"}, TypeError, "Hub grace must be a number of seconds, got '2'"),
        ({"room_queue_size": 0}, ValueError, "Hub room_queue_size must be at least 1, got 0"),
        ({"room_queue_size": 2.5}, TypeError, "Hub room_queue_size must be a whole number, got 2.5"),
        ({"max_presence_meta_bytes": 0}, ValueError, "Hub max_presence_meta_bytes must be at least 1, got 0"),
        ({"policy": "wait"}, ValueError, "'wait' is not a valid SlowClientPolicy"),
    ],
)
def test_the_hubs_own_settings_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Hub refuses a grace, queue size or metadata bound that cannot work, saying what it got."""
    with pytest.raises(error, match=re.escape(message)):
        trionos.Hub(**options)
    hub = trionos.Hub(grace=1)
    assert hub.grace == 1.0 and hub.room_queue_size == 64
    with pytest.raises(ValueError, match="Hub grace must be a positive"):
        hub.grace = -1
    hub.grace = 0.5
    assert hub.grace == 0.5


async def test_a_local_broker_refuses_history_calls() -> None:
    """LocalBroker is not shared: asked for a shared history anyway, it raises BrokerError."""
    broker = trionos.LocalBroker(node_id="n")
    bounds = trionos.HistoryBounds()
    with pytest.raises(trionos.BrokerError, match="is not shared"):
        await broker.history_append(
            "r", "x", exclude_id=None, exclude_identity=None, bounds=bounds, offset_member=None, epoch="e"
        )
    with pytest.raises(trionos.BrokerError, match="is not shared"):
        await broker.history_recover("r", None, None, bounds=bounds, epoch="e", last=3)
    broker.add_member("r", "c", "ann", {})
    broker.remove_member("r", "c")


async def test_a_client_in_a_log_line_shows_a_cut_name_and_id() -> None:
    """A 1 MB name or id from a client becomes at most a few hundred characters of its repr (log lines)."""
    seen: list[str] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        seen.append(repr(chat_hub.client(ws, client_id="i" * 1_000_000, name="n" * 1_000_000)))

    async with trionos.Hub() as chat_hub, open_memory_server(handler, heartbeat=None) as server:
        async with server.connect("/") as ws:
            with pytest.raises(trionos.ConnectionClosed):
                await ws.recv()
    assert len(seen[0]) < 220 and seen[0].startswith("<trionos.Client 'iiii") and "..." in seen[0]
