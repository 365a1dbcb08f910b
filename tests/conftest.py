"""Shared fixtures: real loopback servers on port 0 for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

import trionos
from tests.redis_server import redis_url, unique_prefix

ServeFn = Callable[..., Awaitable[trionos.Server]]


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    """A Redis shared by the tests of one module (each test uses its own key prefix)."""
    with redis_url() as url:
        yield url


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A Redis key prefix of this test's own."""
    return unique_prefix(request.node.name)


async def echo_handler(req: trionos.Request) -> None:
    """The seed echo server."""
    if req.is_upgrade:
        ws = await req.accept()
        async for message in ws:
            await ws.send("Echo: " + message if isinstance(message, str) else message)
    else:
        await req.respond_text("WebSocket endpoint")


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[ServeFn]:
    """Start ``trionos.serve`` on 127.0.0.1 port 0 in the test's nursery; return the Server."""

    async def start(handler: trionos._server.Handler, **options: object) -> trionos.Server:
        options.setdefault("host", "127.0.0.1")
        return await nursery.start(
            lambda task_status: trionos.serve(0, handler, task_status=task_status, **options)
        )

    yield start


async def http_get(port: int, path: str = "/", *, extra: bytes = b"") -> bytes:
    """Send a raw GET and return the whole response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (path.encode(), extra))
        return await read_all(stream)


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Read until the peer closes."""
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def raw_websocket_peer(port: int, path: str = "/") -> trio.SocketStream:
    """A client that completes the handshake by hand and then does only what the test does."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % path.encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101")
    return stream


class CountingCodec:
    """A codec that counts how often it encodes."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, message: Any) -> str:
        self.encoded += 1
        return f"typed:{message}"

    def decode(self, data: str | bytes) -> Any:
        return data
