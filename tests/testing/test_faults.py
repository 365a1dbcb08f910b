"""Fault injectors: half-open peers, disconnects mid-frame, slow consumers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trionos
import trionos.testing
from tests.testing.apps import NO_HEARTBEAT
from trionos.testing import (
    disconnect_mid_frame,
    expect_closed,
    expect_message,
    half_open_peer,
    open_app,
    open_memory_server,
    slow_consumer,
)


async def test_half_open_peer_is_closed_by_the_server_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that goes silent after the handshake is cut exactly heartbeat.timeout seconds later."""
    ended: list[float] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        try:
            async for _ in ws:
                pass
        finally:
            ended.append(trio.current_time())

    heartbeat = trionos.Heartbeat(interval=30, timeout=60)
    async with open_memory_server(handler, heartbeat=heartbeat) as memory:
        async with half_open_peer(memory) as peer:
            start = trio.current_time()
            await expect_closed(peer, timeout=61)
            assert ended == [start + 60]
            assert peer.pings_received == 1  # at 30 s; seen, never answered
            assert not memory.server.connections


@pytest.mark.parametrize("backend", ["memory", "loopback"])
async def test_disconnect_mid_frame_gives_the_handler_1006(backend: trionos.testing.Backend) -> None:
    """A peer that vanishes inside a frame makes the handler's recv raise ConnectionClosed(1006)."""
    outcome: list[tuple[list[str | bytes], int]] = []
    done = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        received = []
        try:
            while True:
                received.append(await ws.recv())
        except trionos.ConnectionClosed as exc:
            outcome.append((received, exc.code))
            done.set()

    async with open_app(handler, backend=backend, **NO_HEARTBEAT) as app:
        await disconnect_mid_frame(app, "/", before=["first", b"second"])
        with trio.fail_after(10):
            await done.wait()
    assert outcome == [(["first", b"second"], 1006)]


async def test_slow_consumer_blocks_the_servers_send_until_it_reads() -> None:
    """Writes to a peer that stops reading stall once the pipe is full, and resume when it reads."""
    sent: list[int] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        for i in range(50):
            await ws.send(f"{i:04}" + "x" * 996)
            sent.append(i)

    async with open_memory_server(handler, buffer_size=4096, **NO_HEARTBEAT) as memory:
        async with slow_consumer(memory) as peer:
            await trio.testing.wait_all_tasks_blocked()
            assert isinstance(peer.stream, trionos.testing.PipeStream)
            assert peer.stream.incoming_bytes == 4096
            assert len(sent) == 4  # 4 frames of 1004 bytes fit; the 5th is half in the pipe
            received = [await peer.recv() for _ in range(50)]
            assert [m[:4] for m in received] == [f"{i:04}" for i in range(50)]
            assert len(sent) == 50


async def test_slow_consumer_is_dropped_by_the_hub_policy(autojump_clock: trio.testing.MockClock) -> None:
    """In a room, a slow consumer fills its outbox and is closed with 1008 after the grace period."""
    closes: dict[str, int | None] = {}

    async with trionos.Hub(grace=2.0) as hub:

        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            async with hub.client(ws, name=req.path) as client:
                hub.join(client, "room")
                try:
                    async for _ in ws:
                        pass
                except trionos.ConnectionClosed:
                    pass
                closes[req.path] = ws.close_code

        options = {"buffer_size": 2048, "max_outbox_bytes": 8192, **NO_HEARTBEAT}
        async with open_memory_server(handler, **options) as memory:
            async with (
                memory.connect("/fast", message_queue_size=100) as fast,
                slow_consumer(memory, "/slow"),
            ):
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                for i in range(40):
                    await hub.broadcast("room", f"{i:04}" + "y" * 996)
                for i in range(40):  # the slow one holds the room's fan-out for up to `grace`
                    await expect_message(fast, f"{i:04}" + "y" * 996, timeout=10)
                assert trio.current_time() - start == pytest.approx(2.0)
                assert hub.slow_clients_dropped == 1
                # Without a socket, the 1008 close frame gets at most half a second to go out.
                await trio.sleep(1)
                assert closes == {"/slow": 1008}
