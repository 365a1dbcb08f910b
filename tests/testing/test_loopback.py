"""open_loopback_server: a real server on 127.0.0.1, port 0, with the memory server's API."""

from __future__ import annotations

import pytest
import trio

import trionos
from tests.testing.apps import NO_HEARTBEAT, echo
from trionos.testing import LoopbackServer, expect_message, open_loopback_server


async def test_serves_on_a_free_port_of_127_0_0_1() -> None:
    """The server gets a real port; url, connect, get and dial all reach it."""
    async with open_loopback_server(echo, **NO_HEARTBEAT) as loopback:
        assert isinstance(loopback, LoopbackServer) and loopback.backend == "loopback"
        port = loopback.server.port
        assert port > 0 and loopback.url == f"ws://127.0.0.1:{port}"
        async with loopback.connect("/x") as ws:
            await ws.send("hi")
            await expect_message(ws, "hi")
        assert (await loopback.get("/page")).text == "hello from /page"
        stream = await loopback.dial()
        assert stream.socket.getpeername()[:2] == ("127.0.0.1", port)
        await stream.aclose()


async def test_leaving_the_block_closes_open_websockets_with_1001() -> None:
    """A client still connected when the block ends sees the server go away (1001)."""
    codes: list[int] = []

    async def client(url: str, connected: trio.Event) -> None:
        async with trionos.connect(url) as ws:
            await ws.send("ping")
            await expect_message(ws, "ping")
            connected.set()
            with pytest.raises(trionos.ConnectionClosed) as info:
                await ws.recv()
            codes.append(info.value.code)

    async with trio.open_nursery() as nursery:
        async with open_loopback_server(echo, **NO_HEARTBEAT) as loopback:
            connected = trio.Event()
            nursery.start_soon(client, loopback.url, connected)
            await connected.wait()
    assert codes == [1001]
