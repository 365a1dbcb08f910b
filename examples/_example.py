"""What every example server shares: ``--host``/``--port`` flags, logging, and a clean exit.

A server started with :func:`run_server` logs the URL it listens on and stops on Ctrl-C or
SIGTERM by cancelling ``serve``, which closes open WebSockets with 1001 (going away).
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Unpack

import trio

import trionos


def server_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the flags every example server takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    return parser


async def _stop_on_signal(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("example").info("received %s, shutting down", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


class ServeKeywords(trionos.ServerOptionKeywords, total=False):
    """What :func:`run_server` passes on to :func:`trionos.serve` besides the handler."""

    metrics: trionos.Metrics | None


def run_server(
    args: argparse.Namespace,
    handler: trionos._server.Handler,
    *,
    around: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]] | None = None,
    **serve_options: Unpack[ServeKeywords],
) -> None:
    """Serve ``handler`` on ``args.host:args.port`` until Ctrl-C or SIGTERM.

    ``around(run)`` may wrap the serving coroutine ``run`` in resources the server needs (a hub,
    say); it must await ``run()`` inside them.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)

            async def run() -> None:
                server = await nursery.start(
                    lambda task_status: trionos.serve(
                        args.port, handler, host=args.host, task_status=task_status, **serve_options
                    )
                )
                logging.getLogger("example").info("listening on %s/", server.url)
                await trio.sleep_forever()

            if around is None:
                await run()
            else:
                await around(run)

    trio.run(main)
