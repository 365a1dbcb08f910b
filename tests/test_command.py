"""The ``trionos`` command in real subprocesses: serving, draining, errors, logging, health.

Each test starts ``python -m trionos`` (or the installed ``trionos`` script) on port 0, reads the
real port from the start-up line and synchronises on the log, never on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import trio

import trionos
from tests.command import ROOT, SCRIPT, http_get, open_command, python_m, run_to_end
from tests.helpers import close_code, raw_websocket_peer, read_all


async def hold_open(url: str, codes: list[int], ready: trio.Semaphore) -> None:
    """Open a WebSocket, check it echoes, then read until closed and note the close code."""
    async with trionos.connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        ready.release()
        codes.append(await close_code(ws))


async def test_serves_a_plain_handler_and_drains_on_sigterm() -> None:
    """`python -m trionos MODULE:handler`: HTTP and WebSockets; SIGTERM closes each with 1001 and exits 0."""
    async with open_command(python_m("tests.command_apps:handler", "--port", "0")) as command:
        url = await command.started()
        assert await http_get(command.port, "/x") == (200, f"pid {command.process.pid}")
        codes: list[int] = []
        ready = trio.Semaphore(0)
        async with trio.open_nursery() as clients:
            for _ in range(3):
                clients.start_soon(hold_open, url.replace("http", "ws"), codes, ready)
            for _ in range(3):
                await ready.acquire()
            command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()
        await command.expect("trionos stopped")
    assert codes == [1001, 1001, 1001]
    log = command.log()
    assert "Traceback" not in log
    assert '"GET /x" 200' in log  # the access log, on by default
    assert log.count('"WS /" 1001') == 3


async def test_installed_script_serves_the_room_chat() -> None:
    """The `trionos` console script serves examples.room_chat:app: a chat between two users, then 1001."""
    async with open_command([str(SCRIPT), "examples.room_chat:app", "--port", "0"]) as command:
        url = (await command.started()).replace("http", "ws")
        status, page = await http_get(command.port, "/")
        assert status == 200 and "<html" in page.lower()
        async with trionos.connect(url) as ann, trionos.connect(url) as bob:
            await ann.send_json({"type": "join", "username": "ann"})
            assert (await ann.recv_json())["type"] == "welcome"
            await bob.send_json({"type": "join", "username": "bob"})
            assert (await bob.recv_json())["type"] == "welcome"
            assert await ann.recv_json() == {"type": "joined", "username": "bob"}
            await bob.send_json({"type": "chat", "text": "hi"})
            said = await ann.recv_json()
            assert (said["type"], said["from"], said["text"]) == ("message", "bob", "hi")
            command.signal(signal.SIGTERM)
            assert await close_code(ann) == 1001
        assert await command.wait() == 0, command.log()


async def test_a_second_signal_stops_at_once() -> None:
    """A peer that never answers the close holds the drain; a second SIGTERM ends the process (status 1)."""
    argv = python_m("tests.command_apps:handler", "--port", "0", "--close-timeout", "60")
    async with open_command(argv) as command:
        await command.started()
        async with await raw_websocket_peer(command.port):  # it never answers the close
            command.signal(signal.SIGTERM)
            await command.expect("SIGTERM: draining")
            command.signal(signal.SIGTERM)
            assert await command.wait(within=10) == 1, command.log()
    await command.expect("SIGTERM again: stopping now")


async def test_sigint_drains_like_sigterm() -> None:
    """SIGINT (Ctrl-C) drains too: the app's lifespan is exited after the last connection, exit 0."""
    async with open_command(python_m("tests.command_apps:app", "--port", "0")) as command:
        await command.expect("lifespan entered")
        await command.started()
        command.signal(signal.SIGINT)
        assert await command.wait() == 0, command.log()
        await command.expect("SIGINT: draining")
        await command.expect("lifespan exited")
        await command.expect("trionos stopped")


def one_line(stderr: str) -> str:
    """The one line the command wrote; fails if it wrote more, or a traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def test_a_port_in_use_is_one_line_and_status_1() -> None:
    """A port already taken: one line on stderr naming the address, exit status 1, no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status, stderr = await run_to_end(python_m("tests.command_apps:handler", "--port", str(port)))
    assert status == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in one_line(stderr)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.no_such_module:app", "cannot import module 'tests.no_such_module'"),
        ("tests.command_apps:nothing", "module 'tests.command_apps' has no attribute 'nothing'"),
        ("tests.command_apps:not_an_app", "expected a handler or an App"),
        ("tests.command_apps", "expected MODULE:ATTR"),
        ("tests.command_missing_extra:handler", "missing dependency: No module named"),
    ],
)
async def test_a_bad_target_is_one_line_and_status_1(target: str, message: str) -> None:
    """A module or attribute that does not exist, a non-app, or a missing dependency: one line, status 1."""
    status, stderr = await run_to_end(python_m(target, "--port", "0"))
    assert status == 1
    assert message in one_line(stderr)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--port", "eighty"],
        ["--max-message-size", "0"],
        ["--workers", "0"],
        ["--heartbeat-interval", "-1"],
        ["--no-such-flag"],
    ],
)
async def test_bad_arguments_exit_with_status_2(arguments: list[str]) -> None:
    """A malformed or out-of-range flag is a usage error: status 2 and a message, no traceback."""
    status, stderr = await run_to_end(python_m("tests.command_apps:handler", *arguments))
    assert status == 2
    assert "error:" in stderr and "Traceback" not in stderr


async def test_health_endpoints_follow_the_apps_readiness(tmp_path: Path) -> None:
    """--health /health: live is 200; ready is 503 until the app says it is ready, then 200."""
    flag = tmp_path / "ready"
    argv = python_m("tests.command_apps:app", "--port", "0", "--health", "/health")
    async with open_command(argv, env={**os.environ, "READY_FILE": str(flag)}) as command:
        await command.started()
        assert await http_get(command.port, "/health/live") == (200, "ok\n")
        assert await http_get(command.port, "/health/ready") == (503, "not ready\n")
        flag.touch()
        assert await http_get(command.port, "/health/ready") == (200, "ready\n")
        assert (await http_get(command.port, "/other"))[0] == 200  # the app's own paths are the app's
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0


async def test_log_config_and_no_access_log(tmp_path: Path) -> None:
    """--log-config FILE configures logging (dictConfig, JSON); --no-access-log writes no request lines."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,  # trionos' loggers exist before the file is read
        "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"handlers": ["err"], "level": "INFO"},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    argv = python_m("tests.command_apps:handler", "--port", "0", "--log-config", str(path), "--no-access-log")
    async with open_command(argv) as command:
        await command.started()
        await http_get(command.port, "/x")
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0
    assert "CUSTOM trionos.run trionos listening on http://127.0.0.1:" in command.log()
    assert "trionos.access" not in command.log()


async def test_a_unix_socket(tmp_path: Path) -> None:
    """--uds PATH serves on a Unix socket (for a proxy on the same host); the start-up line names it."""
    path = tmp_path / "trionos.sock"
    async with open_command(python_m("tests.command_apps:handler", "--uds", str(path))) as command:
        await command.expect(f"trionos listening on unix:{path}")
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await read_all(stream)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(f"pid {command.process.pid}".encode())
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0
    assert '- "GET /" 200' in command.log()  # a Unix socket's peer has no address


async def test_systemd_socket_activation() -> None:
    """With LISTEN_FDS=1 and LISTEN_PID set for it, the command serves the socket on fd 3 (systemd)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        # systemd starts the service with the socket as fd 3 and LISTEN_PID its own pid: a
        # launcher that moves the socket to fd 3 and then execs the command keeps its pid.
        launcher = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
        )
        argv = [
            sys.executable,
            "-c",
            launcher,
            str(listener.fileno()),
            "-m",
            "trionos",
            "tests.command_apps:handler",
        ]
        process = await trio.lowlevel.open_process(argv, pass_fds=(listener.fileno(),), cwd=ROOT)
        listener.close()  # the command's copy is the only one now
        try:
            # The socket listens already: the request waits in its queue until the command serves.
            with trio.fail_after(30):
                assert await http_get(port, "/") == (200, f"pid {process.pid}")
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await process.wait() == 0


async def test_two_commands_share_a_port_with_reuse_port() -> None:
    """--reuse-port: a second, independently started command binds the same port and serves."""
    first_argv = python_m("tests.command_apps:handler", "--port", "0", "--reuse-port")
    async with open_command(first_argv) as first:
        await first.started()
        second_argv = python_m("tests.command_apps:handler", "--port", str(first.port), "--reuse-port")
        async with open_command(second_argv) as second:
            await second.started()
            assert second.port == first.port
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0
            # The first one's socket is gone: the port is the second one's now.
            assert await http_get(first.port, "/") == (200, f"pid {second.process.pid}")
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0
