"""What every reference server shares: the command line, the READY line, the fd limit, signals.

A bench server is a script run as ``python bench/servers/NAME.py --port P``. It binds
``127.0.0.1`` (``--port 0`` picks a free port), prints ``READY <port>`` on stdout once it
listens, and exits cleanly on SIGTERM or SIGINT. The orchestrator (``bench/run.py``) relies on
exactly that and nothing else. Servers print nothing else on stdout.

The protocol the servers speak is tiny:

- ``/echo``: every message is sent back to its sender.
- ``/subscribe``: the connection receives every message published on ``/publish``.
- ``/publish``: every message is broadcast to all ``/subscribe`` connections.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

#: Messages queued per subscriber by the servers that keep a per-subscriber queue.
SUBSCRIBER_QUEUE = 256

#: The listen backlog for servers whose library lets us choose it; 10,000 clients connect
#: at once in the idle scenario.
BACKLOG = 4096


def parse_args(description: str, *, heartbeat: bool = False, compression: bool = False) -> argparse.Namespace:
    """Parse the command line every bench server accepts (``--compression`` where it has one)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    if heartbeat:
        parser.add_argument(
            "--heartbeat", action="store_true", help="enable the server's ping/pong heartbeat"
        )
    if compression:
        parser.add_argument(
            "--compression", action="store_true", help="offer permessage-deflate (bench_compression.py)"
        )
        parser.add_argument(
            "--context-takeover",
            action="store_true",
            help="with --compression: context takeover (where the server has the choice)",
        )
    return parser.parse_args()


def serve_takes(option: str) -> bool:
    """Whether the installed trionos's ``serve`` takes the setting *option*.

    Since 0.2 the settings are the fields of ``trionos.ServerOptions`` (serve takes them as
    ``**keywords``, so its signature does not name them); before, each was a keyword of its own.
    The bench also runs against older trionos versions, hence both.
    """
    import inspect

    import attrs

    import trionos

    options = getattr(trionos, "ServerOptions", None)
    if options is not None:
        return option in attrs.fields_dict(options)
    return option in inspect.signature(trionos.serve).parameters


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    The idle scenario holds 10,000 connections, past the usual soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def announce(port: int) -> None:
    """Tell the orchestrator that the server listens on ``port``."""
    print(f"READY {port}", flush=True)


async def run_trio_until_signalled(start: Callable[..., Awaitable[Any]]) -> None:
    """Start ``start`` with ``nursery.start``, announce its port, and run until SIGTERM/SIGINT.

    ``start(task_status=...)`` must call ``task_status.started(port)`` once it listens.
    """
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(start)
            announce(port)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT, for the asyncio servers (call it inside the loop)."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def run_asyncio(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on the stock asyncio loop."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def fail(message: str) -> None:
    """Exit with ``message`` on stderr: the orchestrator shows it when READY never comes."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)
