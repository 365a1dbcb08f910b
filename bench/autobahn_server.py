"""A pure echo server on ``trionos.serve`` for Autobahn|Testsuite (``make autobahn``).

``python bench/autobahn_server.py --port P [--compression deflate [--context-takeover]]`` echoes
every message
unchanged (text as text, binary as binary), prints ``READY <port>`` once it listens, and runs
until SIGTERM/SIGINT. Messages may be as large as the suite's largest (16 MiB, in 9.*).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

import trionos

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))
from _common import serve_takes  # the bench servers' helpers, found through the path above

#: Autobahn's largest messages are 16 MiB (cases 9.1.6 and 9.2.6).
MAX_MESSAGE = 64 * 1024 * 1024


async def echo(request: trionos.Request) -> None:
    if not request.is_upgrade:
        await request.respond_text("autobahn echo server")
        return
    ws = await request.accept()
    try:
        async for message in ws:
            await ws.send(message)
    except trionos.ConnectionClosed:
        pass  # the suite breaks connections on purpose; the close code is what it checks


async def main(port: int, compression: str | None, context_takeover: bool) -> None:
    options: dict[str, object] = {}
    if serve_takes("compression"):
        options["compression"] = compression
    elif compression is not None:
        sys.exit("this trionos has no compression option")
    if context_takeover:
        if not serve_takes("compression_context_takeover"):
            sys.exit("this trionos has no compression_context_takeover option")
        options["compression_context_takeover"] = True
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trionos.serve(
                port,
                echo,
                host="127.0.0.1",
                max_message_size=MAX_MESSAGE,
                max_outbox_bytes=MAX_MESSAGE,
                heartbeat=None,
                task_status=task_status,
                **options,
            )
        )
        print(f"READY {server.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--compression", choices=["deflate"], default=None)
    parser.add_argument("--context-takeover", action="store_true", help="compression_context_takeover=True")
    args = parser.parse_args()
    trio.run(main, args.port, args.compression, args.context_takeover)
