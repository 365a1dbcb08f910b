"""An echo server: ``python examples/echo_server.py [--host H] [--port P]``.

A plain GET returns "WebSocket endpoint"; text ``m`` is answered with ``Echo: m``; a binary
message is echoed back unchanged. ``--per-address N`` caps the connections one remote address
may hold (503 beyond it; default 100 here, 1,000 in ``serve``).
"""

from __future__ import annotations

from _example import run_server, server_arguments

import trionos


async def handler(req: trionos.Request) -> None:
    if req.is_upgrade:
        ws = await req.accept()
        async for message in ws:  # ends quietly when the client closes normally
            await ws.send("Echo: " + message if isinstance(message, str) else message)
    else:
        await req.respond_text("WebSocket endpoint")


if __name__ == "__main__":
    parser = server_arguments(__doc__.splitlines()[0])
    parser.add_argument("--per-address", type=int, default=100, help="connections per remote address")
    args = parser.parse_args()
    run_server(args, handler, max_connections_per_address=args.per_address)
