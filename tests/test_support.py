"""The server's support nursery: isolated background tasks that end with their connection."""

from __future__ import annotations

import logging
import socket as stdlib_socket
import struct

import pytest
import trio
import trio.testing

import trionos
from tests.helpers import ServeFn, raw_websocket_peer
from trionos._frames import OP_TEXT, encode_frame
from trionos._support import SupportNursery


async def test_a_failing_task_is_logged_and_ends_alone(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in one background task is logged; the nursery and its other tasks go on."""
    other_done = trio.Event()
    release = trio.Event()

    async def fails() -> None:
        raise ValueError("boom")

    async def waits() -> None:
        await release.wait()
        other_done.set()

    async with trio.open_nursery() as nursery:
        support = SupportNursery(nursery)
        support.start_soon(waits)
        support.start_soon(fails)
        await trio.testing.wait_all_tasks_blocked()
        assert [r.exc_info[1] for r in caplog.records if r.exc_info] != []
        assert "boom" in caplog.text
        release.set()
    assert other_done.is_set()


async def test_a_dead_peer_that_flooded_an_idle_handler_leaves_no_task_behind(start_server: ServeFn) -> None:
    """The servicer of a connection whose handler never read, and whose peer vanished, still ends.

    It reads ahead what the handler does not take, up to the queue bound, and stops; once the
    connection is over nothing of it is left in the support nursery.
    """
    go_on = trio.Event()

    async def handler(req: trionos.Request) -> None:
        await req.accept()
        await go_on.wait()  # never reads

    server = await start_server(handler)
    stream = await raw_websocket_peer(server.port, "/flood")
    await stream.send_all(b"".join(encode_frame(OP_TEXT, b"%d" % i, masked=True) for i in range(50)))
    await trio.testing.wait_all_tasks_blocked()
    # Reset instead of a clean close: the server's close frame then fails to go out.
    stream.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
    go_on.set()
    with trio.fail_after(10):
        while server.active_streams:
            await trio.testing.wait_all_tasks_blocked()
    assert server._support is not None
    assert server._support._nursery.child_tasks == frozenset()


async def test_shutdown_still_closes_with_1001_while_readers_live_in_the_support_nursery(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelling serve leaves the connections able to run their closing handshakes, then ends them all."""
    caplog.set_level(logging.ERROR)
    entered = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        entered.set()
        await ws.recv()

    async with trio.open_nursery() as server_nursery:
        server = await server_nursery.start(
            lambda task_status: trionos.serve(0, handler, host="127.0.0.1", task_status=task_status)
        )
        async with trionos.connect(server.url) as ws:
            await entered.wait()
            server_nursery.cancel_scope.cancel()
            with pytest.raises(trionos.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1001
    assert server.active_streams == 0
    assert not caplog.records


async def test_a_server_without_its_support_nursery_says_so() -> None:
    """Handling a connection needs run_support() (serve and the memory server start it)."""

    async def handler(request: trionos.Request) -> None:
        await request.respond_text("never reached")

    left, right = trio.testing.memory_stream_pair()
    server = trionos.Server(handler)
    with pytest.raises(RuntimeError, match=r"run_support\(\) is not running"):
        await server.handle_stream(left)
    await right.aclose()


async def test_serve_that_fails_to_start_still_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the support nursery started propagates instead of waiting for a shutdown."""

    async def listeners_fail(*args: object, **kwargs: object) -> None:
        raise OSError("no listening today")

    async def handler(request: trionos.Request) -> None:
        await request.respond_text("never reached")

    monkeypatch.setattr(trio, "serve_listeners", listeners_fail)
    with trio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        await trionos.serve(0, handler, host="127.0.0.1")
    assert info.group_contains(OSError, match="no listening today")
