"""An echo client: ``python examples/echo_client.py --url ws://127.0.0.1:8080/``.

Sends "Hello, WebSocket!", prints ``Got: <reply>`` and closes.
"""

from __future__ import annotations

import argparse

import trio

import trionos


async def main(url: str) -> None:
    async with trionos.connect(url) as ws:
        await ws.send("Hello, WebSocket!")
        reply = await ws.recv()
        print(f"Got: {reply if isinstance(reply, str) else reply.decode()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send one message to an echo server.")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/")
    trio.run(main, parser.parse_args().url)
