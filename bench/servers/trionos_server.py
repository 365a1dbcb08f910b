"""trionos: echo, and broadcast through a ``trionos.Hub`` room.

``/subscribe`` connections join the room ``"bench"``; every message on ``/publish`` goes to
that room with ``hub.broadcast``. ``--heartbeat`` turns on the ping/pong heartbeat (interval
30 s, timeout 60 s) that a production server would run; the idle scenario uses it. Without it
the heartbeat is off. ``max_connections`` is raised above the idle scenario's 10,000 clients,
and the per-address limit is off (every load generator connection comes from 127.0.0.1).

Until ``trionos.Hub`` exists the broadcast paths answer 404 and only ``/echo`` works.
"""

from __future__ import annotations

import contextlib
import functools

import trio
from _common import fail, parse_args, raise_nofile_limit, run_trio_until_signalled, serve_takes

try:
    import trionos
except ImportError as exc:  # the core is written in parallel; say so instead of a traceback
    trionos = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

ROOM = "bench"


MAX_CONNECTIONS = 20_000


async def handler(hub: trionos.Hub | None, request: trionos.Request) -> None:
    if not request.is_upgrade:
        await request.respond_text("bench")
        return
    if hub is None and request.path != "/echo":
        await request.reject(404, "this trionos has no Hub yet")
        return
    ws = await request.accept()
    try:
        if request.path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif request.path in ("/subscribe", "/idle"):
            async with hub.client(ws) as client:
                hub.join(client, ROOM)
                async for _ in ws:
                    pass
        elif request.path == "/publish":
            async for message in ws:
                await hub.broadcast(ROOM, message)
    except trionos.ConnectionClosed:
        pass  # a client that drops without a close frame is normal under load


def _no_address_limit() -> dict[str, object]:
    # Every load generator connection comes from 127.0.0.1; older trionos versions have no
    # per-address limit (the bench also runs against them).
    if serve_takes("max_connections_per_address"):
        return {"max_connections_per_address": None}
    return {}


async def run(
    host: str,
    port: int,
    heartbeat: bool,
    compression: bool = False,
    context_takeover: bool = False,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    beat = trionos.Heartbeat(interval=30, timeout=60) if heartbeat else None
    options = _no_address_limit()
    if compression:
        options["compression"] = "deflate"
        if context_takeover:
            options["compression_context_takeover"] = True
    serve = functools.partial(
        trionos.serve, port, host=host, heartbeat=beat, max_connections=MAX_CONNECTIONS, **options
    )
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(trionos.Hub()) if hasattr(trionos, "Hub") else None
        nursery = await stack.enter_async_context(trio.open_nursery())
        server = await nursery.start(functools.partial(serve, handler=functools.partial(handler, hub)))
        task_status.started(server.port)


def main() -> None:
    args = parse_args(__doc__, heartbeat=True, compression=True)
    if trionos is None or not hasattr(trionos, "serve"):
        fail(f"trionos is not usable yet: {_IMPORT_ERROR or 'trionos has no serve()'}")
    raise_nofile_limit()
    serve = functools.partial(
        run, args.host, args.port, args.heartbeat, args.compression, args.context_takeover
    )
    trio.run(run_trio_until_signalled, serve)


if __name__ == "__main__":
    main()
