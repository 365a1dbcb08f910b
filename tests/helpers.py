"""Helpers shared by the tests: handlers, raw peers, a counting codec, a Trio loop in a thread.

A plain module that tests import explicitly (``from tests.helpers import ...``); fixtures live in
tests/conftest.py.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import trio

import trionos

T = TypeVar("T")

#: What the ``start_server`` fixture gives: start ``trionos.serve`` with a handler and options.
ServeFn = Callable[..., Awaitable[trionos.Server]]

#: A registered client of either connection type the tests serve: trionos' own or the bridge's.
AnyClient: TypeAlias = "trionos.Client[trionos.WebSocket | trionos.BridgedWebSocket]"


class ServeKeywords(trionos.ServerOptionKeywords, total=False):
    """What ``start_server`` passes on to ``trionos.serve`` besides the handler."""

    host: str
    ssl_context: ssl.SSLContext | None
    metrics: trionos.Metrics | None


async def echo_handler(req: trionos.Request) -> None:
    """Echo every text message as "Echo: ..." and every binary one as is; answer HTTP with a line."""
    if req.is_upgrade:
        ws = await req.accept()
        async for message in ws:
            await ws.send("Echo: " + message if isinstance(message, str) else message)
    else:
        await req.respond_text("WebSocket endpoint")


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


async def close_code(ws: trionos.WebSocket) -> int:
    """Read (and drop) messages until the connection closes; its close code."""
    try:
        while True:
            await ws.recv()
    except trionos.ConnectionClosed as closed:
        return closed.code


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


class Registered(dict[str, AnyClient]):
    """Server-side clients by path, with a way to wait until enough have joined."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def add(self, path: str, client: AnyClient) -> None:
        self[path] = client
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, *paths: str, count: int = 0) -> None:
        while not (all(p in self for p in paths) and len(self) >= count):
            await self._changed.wait()


async def relay_in_room(
    hub: trionos.Hub,
    client: AnyClient,
    ws: AsyncIterable[str | bytes],
    registered: Registered,
    path: str,
) -> None:
    """Join the room "room", register *client* under *path*, relay what *ws* sends there until it
    closes, then unregister it."""
    hub.join(client, "room")
    registered.add(path, client)
    try:
        async for message in ws:
            await hub.broadcast("room", message, exclude=client)
    finally:
        registered.pop(path, None)


def room_handler(hub: trionos.Hub, registered: Registered) -> Any:
    """Every connection joins the room "room", relays what it sends there, and reads until closed."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            await relay_in_room(hub, client, ws, registered, req.path)

    return handler


class TrioThread:
    """A Trio loop in a thread that synchronous code can call into."""

    def __init__(self) -> None:
        ready = threading.Event()
        self._stop: trio.Event | None = None

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def stop(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join()


def imports_loaded(modules: str, roots: tuple[str, ...]) -> list[str]:
    """Import *modules* ("trionos._x, trionos._y") in a fresh interpreter; the loaded ones under *roots*.

    A stand-in package object is used, so that trionos/__init__.py (which imports trio) is not run.
    """
    package = Path(__file__).resolve().parent.parent / "trionos"
    code = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("trionos")
        package.__path__ = [{str(package)!r}]
        sys.modules["trionos"] = package
        import {modules}
        print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {roots!r})))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()
