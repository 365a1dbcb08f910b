"""open_memory_server: the in-memory server and its connections."""

from __future__ import annotations

from tests.testing.apps import echo
from trionos.testing import MemoryServer, expect_message, open_memory_server


async def test_memory_server_keeps_its_original_api() -> None:
    """open_memory_server(handler, **options), .connect(path) and .open_stream() still work as before."""
    async with open_memory_server(echo, heartbeat=None) as memory:
        assert isinstance(memory, MemoryServer)
        async with memory.connect("/", subprotocols=(), message_queue_size=4) as ws:
            await ws.send_json({"a": 1})
            await expect_message(ws, {"a": 1})
        stream = memory.open_stream()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive_some()).startswith(b"HTTP/1.1 200 ")
        await stream.aclose()
