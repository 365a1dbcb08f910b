"""Raw Trio TCP echo, newline-framed: the ceiling for any Trio server (no WebSocket at all).

Each complete line is sent back as soon as it arrives; a partial line waits for its end.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import trio
from _common import parse_args, raise_nofile_limit, run_trio_until_signalled


async def echo(stream: trio.SocketStream) -> None:
    pending = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            pending += data
            end = pending.rfind(b"\n") + 1
            if end:
                lines = bytes(pending[:end])
                del pending[:end]
                await stream.send_all(lines)
    except trio.BrokenResourceError:
        pass


async def serve(
    host: str,
    port: int,
    handler: Callable[[trio.SocketStream], Awaitable[None]] = echo,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, port, host=host))
        task_status.started(listeners[0].socket.getsockname()[1])


def main(handler: Callable[[trio.SocketStream], Awaitable[None]] = echo, description: str = __doc__) -> None:
    """Serve ``handler`` on every connection (``raw_trio_socket.py`` passes its own)."""
    args = parse_args(description)
    raise_nofile_limit()
    trio.run(run_trio_until_signalled, functools.partial(serve, args.host, args.port, handler))


if __name__ == "__main__":
    main()
