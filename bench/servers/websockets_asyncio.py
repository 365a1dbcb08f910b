"""websockets (17.x) on asyncio, with uvloop when it is installed; fan-out with ``broadcast()``.

``websockets.asyncio.server.broadcast`` writes to every connection without waiting, so it is
the fastest fan-out websockets offers.
"""

from __future__ import annotations

from _common import BACKLOG, announce, parse_args, raise_nofile_limit, run_asyncio, stop_event
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


async def main_async(host: str, port: int, compression: bool = False) -> None:
    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        try:
            if path == "/echo":
                async for message in ws:
                    await ws.send(message)
            elif path == "/publish":
                async for message in ws:
                    broadcast(subscribers, message)
            elif path in ("/subscribe", "/idle"):
                subscribers.add(ws)
                try:
                    async for _ in ws:
                        pass
                finally:
                    subscribers.discard(ws)
            else:
                await ws.close(4404, "unknown path")
        except ConnectionClosed:
            pass

    stop = stop_event()
    # --compression: websockets' default permessage-deflate settings.
    deflate = "deflate" if compression else None
    async with serve(handler, host, port, backlog=BACKLOG, compression=deflate) as server:
        announce(next(iter(server.sockets)).getsockname()[1])
        await stop.wait()


def main() -> None:
    args = parse_args(__doc__, compression=True)
    raise_nofile_limit()
    run_asyncio(main_async(args.host, args.port, args.compression))


if __name__ == "__main__":
    main()
