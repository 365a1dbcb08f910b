"""A chat server: every text message goes to every connected client, sender included.

``python examples/chat_server.py [--host H] [--port P]``; a plain GET returns "Chat server".
A client that disconnects, however abruptly, is dropped and nobody else notices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from _example import run_server, server_arguments

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


def main() -> None:
    args = server_arguments(__doc__.splitlines()[0]).parse_args()
    hub = trionos.Hub()

    async def with_hub(run: Callable[[], Awaitable[None]]) -> None:
        async with hub:
            await run()

    run_server(args, make_handler(hub), around=with_hub)


if __name__ == "__main__":
    main()
