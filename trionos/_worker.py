"""A worker process of the ``--workers`` supervisor: ``python -m trionos._worker SOCKET_FD CHANNEL_FD``.

The supervisor (:mod:`._supervisor`) starts it with the listening socket and one end of a socket
pair inherited. It reads its settings from the channel (a length-prefixed pickle, from its own
parent), imports the app, serves on the socket, answers ``r`` once it serves, and drains when it
gets SIGTERM or when the channel ends (the supervisor is gone).
"""

from __future__ import annotations

import logging
import pickle
import socket
import struct
import sys

import trio

from ._runner import Drain, RunSettings, StartupError, app_object, configure_logging, serve_process

__all__ = ["LENGTH", "READY", "main"]

logger = logging.getLogger("trionos.worker")

#: The settings' length prefix on the channel.
LENGTH = struct.Struct("!I")
#: What the worker sends its supervisor once it serves.
READY = b"r"


def _receive_exactly(channel: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise EOFError("the supervisor closed the channel before sending the settings")
        data += chunk
    return data


def main(argv: list[str]) -> int:
    """Serve as one worker; the process's exit status."""
    sock = socket.socket(fileno=int(argv[0]))
    channel = socket.socket(fileno=int(argv[1]))
    (size,) = LENGTH.unpack(_receive_exactly(channel, LENGTH.size))
    settings = pickle.loads(_receive_exactly(channel, size))
    assert isinstance(settings, RunSettings)

    async def watch_supervisor(drain: Drain) -> None:
        # The supervisor never sends more: the end of the stream means it is gone.
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(channel))
        while await stream.receive_some(64):
            pass
        logger.warning("the supervisor is gone: draining")
        drain.request()

    def ready() -> None:
        channel.sendall(READY)

    try:
        configure_logging(settings.log_level, settings.log_config)
        app = app_object(settings)
        serve_process(app, settings, sock, on_ready=ready, extra=watch_supervisor)
    except StartupError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
