"""A chat server: every text message goes to every connected client, sender included.

``trionos examples.chat_server:app``, or ``python examples/chat_server.py [--host H] [--port P]``;
a plain GET returns "Chat server". A client that disconnects, however abruptly, is dropped and
nobody else notices.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trionos


def make_handler(hub: trionos.Hub) -> Callable[[trionos.Request], Awaitable[None]]:
    async def handler(req: trionos.Request) -> None:
        if not req.is_upgrade:
            await req.respond_text("Chat server")
            return
        ws = await req.accept()
        async with hub.client(ws):  # unregistered on exit, whatever the cause
            async for message in ws:
                if isinstance(message, str):
                    await hub.broadcast_all(message)

    return handler


@asynccontextmanager
async def lifespan() -> AsyncIterator[trionos.Handler]:
    """The hub lives from before the first connection until after the last one."""
    async with trionos.Hub() as hub:
        yield make_handler(hub)


#: What ``trionos examples.chat_server:app`` serves.
app = trionos.LifespanApp(lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    args = parser.parse_args()
    trionos.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
