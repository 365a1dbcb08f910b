"""nginx in front of the ``trionos`` command, with the deployment guide's own configuration file.

docs/nginx.conf is what docs/deploy.md shows (it includes the file literally). The test runs
Debian's nginx unprivileged, in a temporary directory, with that file as its only site; what it
changes in it, and why, is in :func:`site_config`. nginx terminates TLS (a trustme certificate) and
forwards to ``python -m trionos tests.proxied_app:app``, which listens on a socket the test made
(``--fd``, as under systemd socket activation), so no port is guessed for it and nothing waits for
it to start: connections wait in the socket's backlog. nginx is ready once it logs that it started
its workers.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

import trionos
from tests.helpers import read_all
from tests.redis_server import free_port
from trionos._client import connect_over

ROOT = Path(__file__).resolve().parent.parent
GUIDE_CONFIG = ROOT / "docs" / "nginx.conf"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
CLIENT = "127.0.0.2"  # the browser: any 127/8 address is loopback; nginx sees this one
START_TIMEOUT = 20

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (`make test` installs it)")

# nginx's compiled-in paths are under /var and /etc, which an unprivileged nginx cannot use: the
# test's own main file puts everything in the prefix directory (-p) and includes the guide's file
# as the site, inside the http block, where the guide says to put it.
MAIN_CONFIG = """\
{user}
pid nginx.pid;
error_log stderr notice;
events {{
}}
http {{
    access_log access.log;
    client_body_temp_path temp/body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    include trionos.conf;
}}
"""


def site_config(*, https_port: int, http_port: int, app_port: int, cert: Path, key: Path) -> str:
    """The guide's file with the few changes a test needs, each made exactly once.

    The listening ports: free ports on 127.0.0.1 instead of 443 and 80 on every interface (an
    unprivileged process cannot bind those, and the test stays on loopback); the app's port; and the
    certificate paths (a trustme certificate instead of Let's Encrypt's).
    """
    text = GUIDE_CONFIG.read_text()
    changes = [
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key)),
    ]
    for old, new in changes:
        assert text.count(old) == 1, f"docs/nginx.conf should say {old!r} once"
        text = text.replace(old, new)
    return text


async def _collect(
    stream: trio.abc.ReceiveStream, into: list[bytes], marker: bytes, seen: trio.Event
) -> None:
    """Read a process's output to its end, setting *seen* once *marker* has appeared."""
    async for chunk in stream:
        into.append(bytes(chunk))
        if marker in b"".join(into):
            seen.set()


class Stack:
    """nginx on ``https_port`` and ``http_port`` in front of the trionos command."""

    def __init__(self, https_port: int, http_port: int, client_context: ssl.SSLContext) -> None:
        self.https_port = https_port
        self.http_port = http_port
        self.client_context = client_context
        #: What the trionos command wrote to stderr (its log, the access log included), complete
        #: once the ``async with`` block has ended.
        self.app_output: list[bytes] = []

    async def open_tls(self) -> trio.SSLStream[trio.SocketStream]:
        """A TLS connection to nginx from the client's address."""
        tcp = await trio.open_tcp_stream("127.0.0.1", self.https_port, local_address=CLIENT)
        stream = trio.SSLStream(tcp, self.client_context, server_hostname="localhost")
        await stream.do_handshake()
        return stream


@asynccontextmanager
async def nginx_in_front_of_trionos(tmp_path: Path) -> AsyncIterator[Stack]:
    """Start the app (the trionos command) and nginx with the guide's config; stop both after."""
    ca = trustme.CA()
    certificate = ca.issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    app_port = listener.getsockname()[1]
    https_port, http_port = free_port(), free_port()
    (tmp_path / "temp").mkdir()
    (tmp_path / "trionos.conf").write_text(
        site_config(https_port=https_port, http_port=http_port, app_port=app_port, cert=cert, key=key)
    )
    # Running as root, nginx's workers would switch to "nobody", who cannot enter the temporary
    # directory; unprivileged, the directive is ignored (with a warning).
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};"
    (tmp_path / "nginx.conf").write_text(MAIN_CONFIG.format(user=user))

    app_command = [sys.executable, "-m", "trionos", "tests.proxied_app:app", "--fd", str(listener.fileno())]
    # Only nginx is a trusted proxy (loopback's 127.0.0.1); the client's 127.0.0.2 is not.
    app_command += ["--forwarded-allow-ips", "127.0.0.1"]
    nginx_command = [str(NGINX), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"]
    nginx_command += ["-g", "daemon off;"]
    stack = Stack(https_port, http_port, client_context)
    app_output = stack.app_output
    nginx_output: list[bytes] = []
    async with trio.open_nursery() as nursery:
        app = await trio.lowlevel.open_process(
            app_command,
            cwd=ROOT,
            pass_fds=(listener.fileno(),),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        listener.close()  # the app holds it now
        nginx = await trio.lowlevel.open_process(nginx_command, stderr=subprocess.PIPE)
        try:
            assert app.stderr is not None and nginx.stderr is not None
            nursery.start_soon(_collect, app.stderr, app_output, b"\0", trio.Event())
            started = trio.Event()
            nursery.start_soon(_collect, nginx.stderr, nginx_output, b"start worker processes", started)
            with trio.fail_after(START_TIMEOUT):
                async with trio.open_nursery() as waiter:

                    async def exited() -> None:
                        await nginx.wait()
                        waiter.cancel_scope.cancel()

                    waiter.start_soon(exited)
                    await started.wait()
                    waiter.cancel_scope.cancel()
            assert nginx.returncode is None, b"".join(nginx_output).decode(errors="replace")
            yield stack
        finally:
            for process in (nginx, app):
                if process.returncode is None:
                    process.terminate()  # nginx: fast shutdown; the app: drain and exit 0
            with trio.move_on_after(START_TIMEOUT):
                await nginx.wait()
                await app.wait()
            for process in (nginx, app):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    assert app.returncode == 0, b"".join(app_output).decode(errors="replace")


async def test_websocket_session_through_nginx(tmp_path: Path) -> None:
    """Through the guide's nginx: TLS, the upgrade, the forwarded client and large messages both ways."""
    async with nginx_in_front_of_trionos(tmp_path) as stack:
        # The browser also sends a forged X-Forwarded-For: nginx appends the real address to it,
        # and the app takes the right-most address that is not a trusted proxy.
        options = trionos.ClientOptions(extra_headers=[("X-Forwarded-For", "6.6.6.6")])
        host = f"localhost:{stack.https_port}"
        async with connect_over(stack.open_tls, host, "/", options, remote=None) as ws:
            assert await ws.recv_json() == {"remote": [CLIENT, 0], "scheme": "https"}
            await ws.send("hello")
            assert await ws.recv() == "hello"
            # nginx's buffers for a WebSocket are 4-8 KiB (proxy_buffer_size): 600 KB each way.
            large = "y" * 600_000
            await ws.send(large)
            assert await ws.recv() == large
            await ws.send("big 700000")
            assert await ws.recv() == "x" * 700_000
    # The command's access log names the client too.
    assert f'{CLIENT}:0 "WS /" 1000'.encode() in b"".join(stack.app_output)


async def test_plain_requests_through_nginx(tmp_path: Path) -> None:
    """Plain HTTPS reaches the app with the client's address; plain HTTP is sent to HTTPS."""
    async with nginx_in_front_of_trionos(tmp_path) as stack:
        stream = await stack.open_tls()
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = await read_all(stream)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body) == {"remote": [CLIENT, 0], "scheme": "https"}
        plain = await trio.open_tcp_stream("127.0.0.1", stack.http_port)
        async with plain:
            await plain.send_all(
                b"GET /room?x=1 HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n"
            )
            redirect = await read_all(plain)
        assert redirect.startswith(b"HTTP/1.1 301")
        assert b"Location: https://chat.example.com/room?x=1\r\n" in redirect
