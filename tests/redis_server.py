"""A private redis-server for the tests that need Redis, and the helpers around it.

:func:`redis_url` gives the URL of a Redis to test against: a private ``redis-server`` on a free
127.0.0.1 port when the binary is on PATH (no persistence, stopped at the end), else
``$TRIONOS_TEST_REDIS_URL``, else the test is skipped with a reason saying how to get one
(``make test`` installs redis-server, so CI never skips). Tests that stop and restart Redis need
the private server (:func:`private_redis_server`). Test modules define their fixtures from these.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ENV_URL = "TRIONOS_TEST_REDIS_URL"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING now (with PONG, or asking for a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, binary: str, port: int, *options: str) -> None:
        self.binary = binary
        self.port = port
        self.options = options
        self.url = f"redis://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING (at most ``START_TIMEOUT`` seconds)."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", *self.options]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode} on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and wait until the port is closed."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def private_redis_server(*options: str) -> Iterator[RedisServer]:
    """A private redis-server (with extra command-line ``options``) for the block.

    Skips the test when there is no redis-server binary: tests that restart or configure Redis
    cannot use a shared one.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (`make test` installs it): this test needs its own Redis")
    server = RedisServer(binary, free_port(), *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def redis_url() -> Iterator[str]:
    """A Redis to test against: a private server, else ``$TRIONOS_TEST_REDIS_URL``, else skip."""
    if shutil.which("redis-server") is not None:
        with private_redis_server() as server:
            yield server.url
        return
    url = os.environ.get(ENV_URL)
    if not url:
        pytest.skip(f"no redis-server on PATH and no {ENV_URL}: `make test` installs redis-server")
    yield url


def unique_prefix(name: str) -> str:
    """A key prefix no other test uses, so tests can share one Redis."""
    return f"trionos-test:{name}:{os.urandom(4).hex()}"
