"""Raw Trio socket echo, newline-framed, on the syscalls the trionos connection itself uses.

The floor for any server on Trio's I/O: each connection's task waits for readiness
(``trio.lowlevel.wait_readable``), reads with ``os.read``, and writes complete lines straight
back with ``os.write``, waiting only while the socket buffer is full. No WebSocket, no stream
abstraction, no extra checkpoint: what is left is Trio's scheduler and its epoll registration
per wait, and the kernel. ``raw_trio_tcp.py`` is the same echo through ``trio.SocketStream``.
"""

from __future__ import annotations

import os

import trio
from raw_trio_tcp import main


async def _write_all(sock: trio.socket.SocketType, data: bytes) -> None:
    fd = sock.fileno()
    view = memoryview(data)
    while view:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


async def echo(stream: trio.SocketStream) -> None:
    sock = stream.socket
    fd = sock.fileno()
    pending = b""
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                return
            pending += data
            end = pending.rfind(b"\n") + 1
            if end:
                lines, pending = pending[:end], pending[end:]
                await _write_all(sock, lines)
    except OSError:
        pass


if __name__ == "__main__":
    main(echo, __doc__)
