"""trio-websocket, the naive way: broadcast awaits ``send_message`` on each subscriber in turn.

This is what most people write first. One slow subscriber slows the publisher and every
subscriber after it, since there is no per-subscriber buffer.
"""

from __future__ import annotations

import functools

import trio
from _common import parse_args, raise_nofile_limit, run_trio_until_signalled
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


async def handler(subscribers: set[WebSocketConnection], request: WebSocketRequest) -> None:
    path = request.path
    if path not in ("/echo", "/subscribe", "/publish", "/idle"):
        await request.reject(404, body=b"unknown path")
        return
    ws = await request.accept()
    try:
        if path == "/echo":
            while True:
                await ws.send_message(await ws.get_message())
        elif path == "/publish":
            while True:
                message = await ws.get_message()
                for subscriber in list(subscribers):
                    try:
                        await subscriber.send_message(message)
                    except ConnectionClosed:
                        subscribers.discard(subscriber)
        else:
            subscribers.add(ws)
            try:
                while True:
                    await ws.get_message()
            finally:
                subscribers.discard(ws)
    except ConnectionClosed:
        pass


async def serve(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    subscribers: set[WebSocketConnection] = set()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_websocket, functools.partial(handler, subscribers), host, port, None)
        )
        task_status.started(server.port)


def main() -> None:
    args = parse_args(__doc__)
    raise_nofile_limit()
    trio.run(run_trio_until_signalled, functools.partial(serve, args.host, args.port))


if __name__ == "__main__":
    main()
