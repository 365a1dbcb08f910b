"""trio-websocket with a bounded memory channel and a writer task per subscriber.

Broadcast is ``send_nowait`` into each subscriber's channel, so a slow subscriber only fills
its own buffer; when that buffer is full the message is dropped for that subscriber.
"""

from __future__ import annotations

import functools

import trio
from _common import SUBSCRIBER_QUEUE, parse_args, raise_nofile_limit, run_trio_until_signalled
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

Outbox = trio.MemorySendChannel[str | bytes]


async def _writer(ws: WebSocketConnection, inbox: trio.MemoryReceiveChannel[str | bytes]) -> None:
    try:
        async for message in inbox:
            await ws.send_message(message)
    except ConnectionClosed:
        pass


async def _subscriber(subscribers: set[Outbox], ws: WebSocketConnection) -> None:
    outbox, inbox = trio.open_memory_channel[str | bytes](SUBSCRIBER_QUEUE)
    subscribers.add(outbox)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, ws, inbox)
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()
    finally:
        subscribers.discard(outbox)


async def handler(subscribers: set[Outbox], request: WebSocketRequest) -> None:
    path = request.path
    if path not in ("/echo", "/subscribe", "/publish", "/idle"):
        await request.reject(404, body=b"unknown path")
        return
    ws = await request.accept()
    if path in ("/subscribe", "/idle"):
        await _subscriber(subscribers, ws)
        return
    try:
        if path == "/echo":
            while True:
                await ws.send_message(await ws.get_message())
        else:
            while True:
                message = await ws.get_message()
                for outbox in subscribers:
                    try:
                        outbox.send_nowait(message)
                    except trio.WouldBlock:
                        pass  # this subscriber is too slow: drop the message for it alone
    except ConnectionClosed:
        pass


async def serve(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    subscribers: set[Outbox] = set()
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
