"""The app tests/test_nginx.py serves behind nginx: it says who the client is, and echoes.

A WebSocket client first gets ``{"remote": ..., "scheme": ...}`` (what the server made of the
forwarding headers), then each message back unchanged; ``"big N"`` is answered with N bytes of
text, so that a message larger than nginx's buffers goes both ways.
"""

from __future__ import annotations

import trionos


async def app(req: trionos.Request) -> None:
    """Report the client's address and scheme, then echo."""
    seen = {"remote": req.remote, "scheme": req.scheme}
    if not req.is_upgrade:
        await req.respond_json(seen)
        return
    ws = await req.accept()
    await ws.send_json(seen)
    async for message in ws:
        if isinstance(message, str) and message.startswith("big "):
            await ws.send("x" * int(message.removeprefix("big ")))
        else:
            await ws.send(message)
