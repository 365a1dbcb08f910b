"""The trio-websocket bridge: a real trio-websocket server's connections in a trionos Hub."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
import trio
import trio_websocket

import trionos
from tests.helpers import Registered, read_all, relay_in_room


@attrs.frozen
class Hello:
    """A typed message for the codec test."""

    name: str


@pytest.fixture
async def hub(nursery: trio.Nursery) -> AsyncIterator[trionos.Hub]:
    yield await nursery.start(trionos.Hub().run)


#: The bridge's default heartbeat.
BRIDGE_HEARTBEAT = trionos.Heartbeat()

TrioWebSocketHandler = Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]


async def start_trio_websocket_server(
    nursery: trio.Nursery, handler: TrioWebSocketHandler
) -> trio_websocket.WebSocketServer:
    """A plain trio-websocket server on 127.0.0.1, port 0."""
    serve = functools.partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    server: trio_websocket.WebSocketServer = await nursery.start(serve)
    return server


def relay_handler(
    hub: trionos.Hub, registered: Registered, *, heartbeat: trionos.Heartbeat | None = BRIDGE_HEARTBEAT
) -> TrioWebSocketHandler:
    """A trio-websocket handler that bridges its connection into the room "room" and relays to it."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        async with (
            trionos.bridge_trio_websocket(connection, heartbeat=heartbeat) as ws,
            hub.client(ws) as client,
        ):
            path = connection.path
            assert path is not None
            await relay_in_room(hub, client, ws, registered, path)

    return handler


async def test_bridged_connections_share_a_room(hub: trionos.Hub, nursery: trio.Nursery) -> None:
    """trio-websocket clients of a trio-websocket server get each other's broadcasts through the hub."""
    registered = Registered()
    server = await start_trio_websocket_server(nursery, relay_handler(hub, registered))
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        trio_websocket.open_websocket_url(f"{url}/a") as a,
        trio_websocket.open_websocket_url(f"{url}/b") as b,
        trionos.connect(f"{url}/c") as c,  # a trionos client against the same server
    ):
        await registered.wait_for("/a", "/b", "/c")
        await a.send_message("from a")
        await c.send(b"binary from c")
        assert await b.get_message() == "from a"
        assert await c.recv() == "from a"
        assert await b.get_message() == b"binary from c"
        assert await a.get_message() == b"binary from c"


async def test_typed_messages_and_direct_sends_keep_order(hub: trionos.Hub, nursery: trio.Nursery) -> None:
    """A broadcast queued before a direct send arrives first; typed helpers work on the bridge."""
    codec: trionos.Codec[Hello] = trionos.Codec(Hello)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        async with trionos.bridge_trio_websocket(connection) as ws, hub.client(ws) as client:
            hub.join(client, "room")
            hello = await ws.recv_message(codec)
            await hub.broadcast("room", f"broadcast for {hello.name}")
            await ws.send_message(Hello("after"), codec)
            await ws.recv()

    server = await start_trio_websocket_server(nursery, handler)
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send_message(codec.encode(Hello("ann")))
        assert await ws.get_message() == "broadcast for ann"
        assert codec.decode(await ws.get_message()) == Hello("after")


async def test_bridge_heartbeat_closes_a_silent_peer(hub: trionos.Hub, nursery: trio.Nursery) -> None:
    """A peer that never answers pings is closed with 1011 by the bridge's heartbeat."""
    registered = Registered()
    heartbeat = trionos.Heartbeat(interval=0.05, timeout=0.2)
    server = await start_trio_websocket_server(nursery, relay_handler(hub, registered, heartbeat=heartbeat))
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            b"GET /silent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await registered.wait_for("/silent")
        client = registered["/silent"]
        with trio.fail_after(10):  # generous for a loaded machine; the timeout is 0.2 s
            received = await read_all(stream)  # never answers the pings it gets
    assert b"\x88" in received  # the close frame
    assert client.ws.close_code == 1011


def test_without_the_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without trio-websocket installed, using the bridge names the extra to install."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "trio_websocket", None)
    monkeypatch.delitem(sys.modules, "trionos._bridge")
    with pytest.raises(ImportError, match=r"pip install 'trionos\[trio-websocket\]'"):
        importlib.import_module("trionos._bridge")


async def test_abnormal_closes_end_the_handler_not_the_server(
    hub: trionos.Hub, nursery: trio.Nursery
) -> None:
    """With the documented handler, closes 1006, 1007, 1009, 1011 and 4000 leave serve_websocket serving."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:  # as in docs/trio-websocket.md
        connection = await request.accept()
        async with trionos.bridge_trio_websocket(connection) as ws, hub.client(ws) as client:
            hub.join(client, "lobby")
            async for message in ws:
                await hub.broadcast("lobby", message)

    server = await start_trio_websocket_server(nursery, handler)
    url = f"ws://127.0.0.1:{server.port}/"
    async with trio_websocket.open_websocket_url(url) as watcher:
        for code in (1007, 1009, 1011, 4000):
            async with trio_websocket.open_websocket_url(url) as client:
                await client.send_message("hi")
                assert await watcher.get_message() == "hi"
                await client.aclose(code, "bye")
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)  # 1006: no close frame at all
        async with stream:
            await stream.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert b"101" in await stream.receive_some(4096)
        async with trio_websocket.open_websocket_url(url) as late:  # the server still serves
            await late.send_message("still here")
            assert await watcher.get_message() == "still here"


async def test_a_bridged_close_is_caught_as_trionos_and_as_trio_websocket(
    hub: trionos.Hub, nursery: trio.Nursery
) -> None:
    """A migrating app's except trio_websocket.ConnectionClosed catches the bridge's close and reason."""
    caught: list[BaseException] = []
    handled = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        async with trionos.bridge_trio_websocket(connection) as ws:
            try:
                await ws.recv()
            except trio_websocket.ConnectionClosed as exc:
                caught.append(exc)
                handled.set()

    server = await start_trio_websocket_server(nursery, handler)
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/") as client:
        await client.aclose(4000, "app says bye")
    with trio.fail_after(5):
        await handled.wait()
    error = caught[0]
    assert isinstance(error, trionos.ConnectionClosed) and isinstance(error, trionos.BridgedConnectionClosed)
    assert error.code == 4000 and error.reason == "app says bye" and not error.normal
    as_trio_websocket: trio_websocket.ConnectionClosed = error  # how a migrating app reads it
    reason = as_trio_websocket.reason
    assert reason is not None and reason.code == 4000 and reason.reason == "app says bye"
    assert reason.name == "PRIVATE_RESERVED"


async def test_the_bridge_counts_the_closes_it_sees_by_code(hub: trionos.Hub, nursery: trio.Nursery) -> None:
    """Given metrics, each bridged connection that ends closed is counted by its code; 4000 is bucketed."""

    ended_send, ended = trio.open_memory_channel[None](10)

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        connection = await request.accept()
        async with trionos.bridge_trio_websocket(connection, metrics=hub.metrics) as ws:
            async for _ in ws:
                pass
        await ended_send.send(None)

    server = await start_trio_websocket_server(nursery, handler)
    url = f"ws://127.0.0.1:{server.port}/"
    for code in (1000, 1011, 4000, 4001):
        async with trio_websocket.open_websocket_url(url) as client:
            await client.aclose(code, "bye")
    with trio.fail_after(5):
        for _ in range(4):
            await ended.receive()
    assert hub.metrics.bridge_closed == {1000: 1, 1011: 1, 4000: 1, 4001: 1}
    pytest.importorskip("prometheus_client")
    from trionos._prometheus import render_metrics

    text = render_metrics(hub.metrics).decode()
    assert 'trionos_bridge_closed_total{code="4000-4999"} 2.0' in text
