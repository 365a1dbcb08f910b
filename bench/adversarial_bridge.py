"""Issue #25, finding 2: does one client's close end a trio-websocket server that uses the bridge?

    python bench/adversarial_bridge.py

Starts ``bench/adversarial_bridge.py serve PORT`` (the handler of docs/trio-websocket.md on
trio-websocket's ``serve_websocket``, 127.0.0.1) as a process of its own, then, for each close
code (1000, 1007, 1009, 1011, 4000, and 1006: TCP closed without a close frame), one client
joins, says hello and closes that way, and a second client checks that the server still
answers. Reported per code: alive, or the server's exit status.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys

import trio
import trio_websocket

import trionos

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def handler(hub: trionos.Hub, request: trio_websocket.WebSocketRequest) -> None:
    """The documented handler (docs/trio-websocket.md, step 1)."""
    connection = await request.accept()
    async with trionos.bridge_trio_websocket(connection) as ws, hub.client(ws) as client:
        hub.join(client, "lobby")
        async for message in ws:
            await hub.broadcast("lobby", message)


async def serve(port: int) -> None:
    """The server process."""
    async with trionos.Hub() as hub:
        await trio_websocket.serve_websocket(
            functools.partial(handler, hub), "127.0.0.1", port, ssl_context=None
        )


async def close_with(port: int, code: int) -> None:
    """One client: hello, then close with *code* (1006: drop the TCP connection)."""
    if code == 1006:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(UPGRADE)
            await stream.receive_some(4096)
        return
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send_message("hello")
        await ws.aclose(code, "bye")


async def answers(port: int) -> bool:
    """Whether the server still accepts a WebSocket."""
    try:
        with trio.fail_after(3):
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send_message("still there?")
                return True
    except (OSError, trio.TooSlowError, trio_websocket.HandshakeError):
        return False


async def main() -> None:
    """Start the server process per close code and report what the close did to it."""
    for code in (1000, 1007, 1009, 1011, 4000, 1006):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, __file__, "serve", str(port)]
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                functools.partial(trio.run_process, command, check=False, stderr=subprocess.DEVNULL)
            )
            for _ in range(100):  # polling the new process until it listens (at most 10 s)
                if await answers(port):
                    break
                await trio.sleep(0.1)
            await close_with(port, code)
            alive = await answers(port)
            with trio.move_on_after(1):
                await process.wait()
            status = (
                "alive"
                if alive and process.returncode is None
                else f"ENDED (exit status {process.returncode})"
            )
            print(f"close {code}: server {status}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        trio.run(serve, int(sys.argv[2]))
    else:
        trio.run(main)
