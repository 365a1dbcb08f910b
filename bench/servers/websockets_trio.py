"""websockets (17.x) on Trio: ``websockets.trio.server.serve``, fan-out with its ``broadcast``."""

from __future__ import annotations

import functools

import trio
from _common import BACKLOG, parse_args, raise_nofile_limit, run_trio_until_signalled
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection, broadcast, serve


async def handler(subscribers: set[ServerConnection], ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    try:
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/publish":
            async for message in ws:
                await broadcast(subscribers, message)
        elif path in ("/subscribe", "/idle"):
            subscribers.add(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                subscribers.discard(ws)
        else:
            await ws.aclose(4404, "unknown path")
    except ConnectionClosed:
        pass


async def run(host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    subscribers: set[ServerConnection] = set()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve,
                functools.partial(handler, subscribers),
                port,
                host=host,
                backlog=BACKLOG,
                compression=None,
            )
        )
        sockname = server.listeners[0].socket.getsockname()
        task_status.started(sockname[1])


def main() -> None:
    args = parse_args(__doc__)
    raise_nofile_limit()
    trio.run(run_trio_until_signalled, functools.partial(run, args.host, args.port))


if __name__ == "__main__":
    main()
