"""Small apps (and a model) that the test kit's own tests run against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trionos

#: Server options that turn the heartbeat off (no pings to account for).
NO_HEARTBEAT: dict[str, Any] = {"heartbeat": None}


async def echo(req: trionos.Request) -> None:
    """Echo every message; answer plain HTTP with a greeting."""
    if not req.is_upgrade:
        await req.respond_text(f"hello from {req.path}")
        return
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def relay_app() -> AsyncIterator[trionos._server.Handler]:
    """Every message goes to every other client (one hub room)."""
    async with trionos.Hub() as hub:

        async def handler(req: trionos.Request) -> None:
            ws = await req.accept()
            async with hub.client(ws) as client:
                hub.join(client, "all")
                async for message in ws:
                    await hub.broadcast("all", message, exclude=client)

        yield handler


class RelayModel:
    """What relay_app should do: everyone connected but the sender gets each message."""

    def __init__(self, *, echo_to_sender: bool = False) -> None:
        self.connected: set[int] = set()
        self.echo_to_sender = echo_to_sender

    def connect(self, client: int) -> dict[int, list[Any]]:
        self.connected.add(client)
        return {}

    def send(self, client: int, message: Any) -> dict[int, list[Any]]:
        return {c: [message] for c in self.connected if c != client or self.echo_to_sender}

    def disconnect(self, client: int) -> dict[int, list[Any]]:
        self.connected.discard(client)
        return {}
