"""serve() on sockets made elsewhere (sock=, fd=), Unix sockets (uds=), SO_REUSEPORT; systemd variables."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
import trio

import trionos
from tests.helpers import read_all
from trionos._listen import bind_socket, listen_fds, socket_url


async def hello(req: trionos.Request) -> None:
    """Answer every request with ``hello``."""
    await req.respond_text("hello")


async def get(stream: trio.abc.Stream) -> bytes:
    """One GET over *stream*; the whole response."""
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_all(stream)


async def test_serve_on_a_socket_made_elsewhere(nursery: trio.Nursery) -> None:
    """serve(None, handler, sock=s) serves on a listening socket the caller bound."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = await nursery.start(functools.partial(trionos.serve, None, hello, sock=sock))
    assert (server.host, server.port) == ("127.0.0.1", port)
    assert (await get(await trio.open_tcp_stream("127.0.0.1", port))).endswith(b"hello")


async def test_serve_on_a_file_descriptor(nursery: trio.Nursery) -> None:
    """serve(None, handler, fd=n) serves on an inherited descriptor (what systemd passes as fd 3)."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    fd = sock.detach()
    await nursery.start(functools.partial(trionos.serve, None, hello, fd=fd))
    assert (await get(await trio.open_tcp_stream("127.0.0.1", port))).endswith(b"hello")


async def test_serve_on_a_unix_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    """serve(None, handler, uds=path) listens on a Unix socket; a stale socket file is replaced."""
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # left behind, as after a crash
    server = await nursery.start(functools.partial(trionos.serve, None, hello, uds=str(path)))
    assert server.host == str(path)
    response = await get(await trio.open_unix_socket(str(path)))
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello")


async def test_two_servers_share_a_port_with_reuse_port(nursery: trio.Nursery) -> None:
    """reuse_port=True lets a second server bind the same port (Linux spreads connections over both)."""
    first = await nursery.start(functools.partial(trionos.serve, 0, hello, host="127.0.0.1", reuse_port=True))
    second = await nursery.start(
        functools.partial(trionos.serve, first.port, hello, host="127.0.0.1", reuse_port=True)
    )
    assert second.port == first.port
    assert (await get(await trio.open_tcp_stream("127.0.0.1", first.port))).endswith(b"hello")


@pytest.mark.parametrize(
    ("port", "kwargs", "message"),
    [
        (None, {}, "needs a port"),
        (None, {"reuse_port": True}, "needs a port"),
        (0, {"fd": 1, "uds": "x"}, "one of sock=, fd= and uds="),
    ],
)
async def test_serve_wants_exactly_one_way_to_listen(
    port: int | None, kwargs: dict[str, object], message: str
) -> None:
    """serve() needs a port or one of sock=/fd=/uds=, and refuses more than one of them."""
    with pytest.raises(TypeError, match=message):
        await trionos.serve(port, hello, **kwargs)  # type: ignore[arg-type]


async def test_a_datagram_socket_is_refused() -> None:
    """A descriptor that is not a stream socket is an OSError, not a server that never answers."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(OSError, match="stream socket"),
    ):
        await trionos.serve(None, hello, sock=udp)


def test_listen_fds_reads_systemds_variables() -> None:
    """LISTEN_FDS counts descriptors from 3, only when LISTEN_PID is this process."""
    me = os.getpid()
    assert listen_fds({"LISTEN_PID": str(me), "LISTEN_FDS": "2"}, pid=me) == [3, 4]
    assert listen_fds({"LISTEN_PID": str(me + 1), "LISTEN_FDS": "1"}, pid=me) == []
    assert listen_fds({}, pid=me) == []
    assert listen_fds({"LISTEN_PID": "x", "LISTEN_FDS": "1"}, pid=me) == []


def test_socket_url_names_tcp_ipv6_and_unix_sockets(tmp_path: Path) -> None:
    """The start-up line's URL: http://host:port/, [v6]:port, or unix:PATH."""
    with bind_socket("127.0.0.1", 0) as sock:
        assert socket_url(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}/"
    if socket.has_ipv6:
        with bind_socket("::1", 0) as sock:
            assert socket_url(sock, secure=True) == f"https://[::1]:{sock.getsockname()[1]}/"
    with bind_socket(None, 0, uds=str(tmp_path / "u.sock")) as sock:
        assert socket_url(sock) == f"unix:{tmp_path / 'u.sock'}"
    with bind_socket(None, 0) as sock:  # every interface
        assert sock.getsockname()[1] > 0
