"""An echo server: ``trionos examples.echo_server:app`` or ``python examples/echo_server.py``.

``python examples/echo_server.py [--host H] [--port P] [--per-address N]``.

A plain GET returns "WebSocket endpoint"; text ``m`` is answered with ``Echo: m``; a binary
message is echoed back unchanged. ``--per-address N`` caps the connections one client address
may hold (503 beyond it); by default there is no cap, as in ``serve``, so that a load test from
one machine is never refused.
"""

from __future__ import annotations

import argparse

import trionos


async def handler(req: trionos.Request) -> None:
    if req.is_upgrade:
        ws = await req.accept()
        async for message in ws:  # ends quietly when the client closes normally
            await ws.send("Echo: " + message if isinstance(message, str) else message)
    else:
        await req.respond_text("WebSocket endpoint")


#: What ``trionos examples.echo_server:app`` serves: a plain handler is an app.
app = handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--per-address", type=int, default=None, help="connections per client address (default: no limit)"
    )
    args = parser.parse_args()
    trionos.run(app, host=args.host, port=args.port, max_connections_per_address=args.per_address)
