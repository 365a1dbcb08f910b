"""Listening sockets: bound by us (TCP or a Unix socket), or handed over by someone else.

:func:`bind_socket` makes a listening socket before any event loop runs, so that the runner can
report a port in use in one line, and its worker processes can inherit the socket.
:func:`listen_fds` reads systemd's socket activation variables. :func:`open_listeners` turns what
:func:`trionos.serve` was given (a port, a socket, a descriptor, a path) into Trio listeners.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import trio

__all__ = ["BACKLOG", "SD_LISTEN_FDS_START", "bind_socket", "listen_fds", "open_listeners", "socket_url"]

#: The accept queue asked of the kernel (it is capped by ``net.core.somaxconn``; see docs/deploy.md).
BACKLOG = 4096

#: The first descriptor systemd passes to a socket-activated service.
SD_LISTEN_FDS_START = 3


def bind_socket(
    host: str | None,
    port: int,
    *,
    uds: str | None = None,
    reuse_port: bool = False,
    backlog: int = BACKLOG,
) -> socket.socket:
    """A listening socket on *host*:*port*, or on the Unix socket path *uds*.

    Args:
        host: the address; ``None`` or ``""`` listens on every interface (IPv6 and IPv4 when the
            system allows it).
        port: the TCP port; 0 picks a free one.
        uds: listen on this Unix socket path instead (a stale socket file there is replaced; any
            other file is an error).
        reuse_port: set ``SO_REUSEPORT``, so that other sockets may bind the same port (Linux
            spreads connections over them).
        backlog: the accept queue's length.

    Raises:
        OSError: the address cannot be bound (``errno.EADDRINUSE`` for a port in use).
    """
    if uds is not None:
        path = Path(uds)
        if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(uds)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    if not host:
        dual = socket.has_dualstack_ipv6()
        return socket.create_server(
            ("::" if dual else "", port),
            family=socket.AF_INET6 if dual else socket.AF_INET,
            backlog=backlog,
            reuse_port=reuse_port,
            dualstack_ipv6=dual,
        )
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address[:2], family=family, backlog=backlog, reuse_port=reuse_port)


def listen_fds(environ: dict[str, str] | None = None, pid: int | None = None) -> list[int]:
    """The listening descriptors systemd passed to this process (socket activation), if any.

    systemd sets ``LISTEN_PID`` to the service's process id and ``LISTEN_FDS`` to how many
    descriptors it passed, starting at 3. Variables meant for another process are ignored.

    Args:
        environ: the environment to read (``os.environ``).
        pid: this process's id (``os.getpid()``).
    """
    env = os.environ if environ is None else environ
    try:
        if int(env.get("LISTEN_PID", "")) != (os.getpid() if pid is None else pid):
            return []
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(0, count)))


def socket_url(sock: socket.socket, *, secure: bool = False) -> str:
    """``http://host:port/`` (``https``) of a listening socket, or ``unix:PATH`` for a Unix one."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{host}:{port}/"


async def open_listeners(
    port: int | None,
    host: str | None,
    *,
    sock: socket.socket | None = None,
    fd: int | None = None,
    uds: str | None = None,
    reuse_port: bool = False,
) -> list[trio.SocketListener]:
    """Trio listeners for what :func:`trionos.serve` was given: exactly one way to listen.

    Raises:
        TypeError: more than one of *sock*, *fd* and *uds* was given, or none of them and no port.
        OSError: the address cannot be bound, or *fd* is not a socket.
    """
    given = [name for name, value in (("sock", sock), ("fd", fd), ("uds", uds)) if value is not None]
    if len(given) > 1:
        raise TypeError(f"serve() takes one of sock=, fd= and uds=, got {' and '.join(given)}")
    if fd is not None:
        sock = socket.socket(fileno=fd)
    elif uds is not None:
        sock = bind_socket(None, 0, uds=uds)
    elif reuse_port:
        if port is None:
            raise TypeError("serve() needs a port, or one of sock=, fd= and uds=")
        sock = bind_socket(host, port, reuse_port=True)
    if sock is None:
        if port is None:
            raise TypeError("serve() needs a port, or one of sock=, fd= and uds=")
        return list(await trio.open_tcp_listeners(port, host=host))
    if sock.type != socket.SOCK_STREAM:
        raise OSError(f"expected a stream socket, got {sock!r}")
    sock.listen(BACKLOG)  # a no-op on a listening socket except for the queue length
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
