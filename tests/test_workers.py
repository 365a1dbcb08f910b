"""``trionos --workers N`` in real subprocesses: the supervisor, its workers, restarts, rolling restarts.

The supervisor logs ``worker N serving (pid P)`` for each worker that serves, and the test app
answers a plain GET with its process id, so a test knows which worker answered.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trionos
from tests.command import WORKER, Command, http_get, open_command, python_m, run_to_end
from tests.helpers import close_code
from tests.redis_server import private_redis_server, unique_prefix

#: Patience for a message between two workers through Redis on a loaded machine.
PATIENCE = 10.0


@asynccontextmanager
async def two_workers(
    *extra: str, app: str = "tests.command_apps:handler"
) -> AsyncIterator[tuple[Command, dict[int, int]]]:
    """The command with two workers on a free port; yields it and {worker number: pid}."""
    async with open_command(python_m(app, "--port", "0", "--workers", "2", *extra)) as command:
        pids = await worker_pids(command, 2)
        await command.started()
        yield command, pids


async def worker_pids(command: Command, count: int) -> dict[int, int]:
    """The next *count* ``worker N serving (pid P)`` lines, as {N: P}."""
    pids: dict[int, int] = {}
    while len(pids) < count:
        match = await command.expect(WORKER)
        pids[int(match.group(1))] = int(match.group(2))
    return pids


async def answering_pid(port: int) -> int:
    """The pid of the worker that answers one GET."""
    status, body = await http_get(port, "/")
    assert status == 200
    return int(body.split()[1])


async def test_connections_land_on_both_workers() -> None:
    """With --workers 2, connections are served by both worker processes (two different pids)."""
    async with two_workers() as (command, pids):
        await command.expect("each worker has its own rooms")
        seen: set[int] = set()

        async def one() -> None:
            seen.add(await answering_pid(command.port))

        with trio.fail_after(30):
            while seen != set(pids.values()):
                async with trio.open_nursery() as nursery:  # concurrent, as real clients are
                    for _ in range(8):
                        nursery.start_soon(one)
        assert command.process.pid not in seen  # the supervisor never serves
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()


async def test_sigterm_drains_every_worker() -> None:
    """SIGTERM to the supervisor: every worker closes its WebSockets with 1001, then exit status 0."""
    async with two_workers() as (command, _):
        codes: list[int] = []
        async with trio.open_nursery() as nursery:
            opened = trio.Semaphore(0)

            async def client() -> None:
                async with trionos.connect(command.url.replace("http", "ws")) as ws:
                    await ws.send("hello")
                    assert await ws.recv() == "hello"
                    opened.release()
                    codes.append(await close_code(ws))

            for _ in range(6):
                nursery.start_soon(client)
            for _ in range(6):
                await opened.acquire()
            command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()
        await command.expect("trionos stopped")
    assert codes == [1001] * 6


async def test_a_killed_worker_is_replaced_and_the_port_keeps_serving() -> None:
    """SIGKILL to a worker: the other serves on; the supervisor logs why and starts a new one."""
    async with two_workers() as (command, pids):
        os.kill(pids[0], signal.SIGKILL)
        await command.expect(rf"worker 0 \(pid {pids[0]}\) died: signal SIGKILL .* restarting in")
        assert await answering_pid(command.port) == pids[1]  # still serving, before the restart
        replacement = int((await command.expect(r"worker 0 serving \(pid (\d+)\)")).group(1))
        assert replacement not in pids.values()
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()


async def test_sighup_replaces_both_workers_without_refusing_a_connection() -> None:
    """SIGHUP: each worker is replaced by a new one that serves first; no connection attempt fails."""
    async with two_workers() as (command, old):
        answered: list[int] = []
        failures: list[BaseException] = []
        done = trio.Event()

        async def keep_asking() -> None:
            while not done.is_set():
                try:
                    answered.append(await answering_pid(command.port))
                except (OSError, trio.BrokenResourceError, ValueError, IndexError) as exc:
                    failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(keep_asking)
            command.signal(signal.SIGHUP)
            new = await worker_pids(command, 2)
            await command.expect("rolling restart done")
            done.set()
        assert not failures, failures[:3]
        assert not set(new.values()) & set(old.values())
        assert answered  # the port answered all along
        # The old workers drained and exited; the new ones serve.
        assert {await answering_pid(command.port) for _ in range(4)} <= set(new.values())
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()


async def test_workers_drain_by_themselves_when_the_supervisor_is_killed() -> None:
    """SIGKILL to the supervisor: each worker sees its channel end, drains and exits (no orphans)."""
    async with two_workers() as (command, pids):
        command.signal(signal.SIGKILL)
        for _ in pids:
            await command.expect(r"the supervisor is gone: draining")
        with trio.fail_after(30):
            # Every process that held the log's pipe has exited (a worker that had not would
            # hold it open forever); they may linger as zombies of whoever adopted them.
            await command.log_closed.wait()


async def test_a_crash_loop_backs_off_and_recovers(tmp_path: Path) -> None:
    """A worker that cannot start again is retried after growing delays; once it can, it serves."""
    fail = tmp_path / "fail"
    argv = python_m("tests.command_apps:flaky", "--port", "0", "--workers", "2")
    async with open_command(argv, env={**os.environ, "FAIL_FILE": str(fail)}) as command:
        pids = await worker_pids(command, 2)
        await command.started()
        fail.touch()
        os.kill(pids[0], signal.SIGKILL)
        await command.expect(r"worker 0 \(pid \d+\) died: signal SIGKILL")
        delays = []
        for _ in range(2):
            await command.expect(r"worker 0 \(pid \d+\) exited before serving: exit status 1")
            delays.append(float((await command.expect(r"restarting worker 0 in ([\d.]+) s")).group(1)))
        assert delays[1] > delays[0]  # backing off
        assert await answering_pid(command.port) == pids[1]  # the other worker serves meanwhile
        fail.unlink()
        await command.expect(r"worker 0 serving \(pid \d+\)")
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()


async def test_an_app_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    """If a first worker cannot start, the supervisor stops every worker and exits with status 1."""
    fail = tmp_path / "fail"
    fail.touch()
    argv = python_m("tests.command_apps:flaky", "--port", "0", "--workers", "2")
    status, stderr = await run_to_end(argv, env={**os.environ, "FAIL_FILE": str(fail)})
    assert status == 1, stderr
    assert "could not start" in stderr


@asynccontextmanager
async def member(url: str, name: str, users: list[str]) -> AsyncIterator[trionos.WebSocket]:
    """A room chat client that joined the lobby; its welcome lists *users*."""
    async with trionos.connect(url) as ws:
        await ws.send_json({"type": "join", "username": name})
        with trio.fail_after(PATIENCE):
            welcome = await ws.recv_json()
        assert welcome["type"] == "welcome" and welcome["users"] == users, welcome
        yield ws


async def test_room_chat_on_two_workers_is_one_chat_through_redis(redis: str, prefix: str) -> None:
    """examples/room_chat.py --workers 2 --redis URL: users on different workers chat in one room."""
    argv = [sys.executable, "examples/room_chat.py", "--port", "0", "--workers", "2", "--redis", redis]
    argv += ["--redis-prefix", unique_prefix(prefix), "--no-history"]
    async with open_command(argv) as command:
        pids = await worker_pids(command, 2)
        url = (await command.started()).replace("http", "ws")
        # A stopped worker cannot accept: the other one takes the connection.
        os.kill(pids[1], signal.SIGSTOP)
        try:
            async with member(url, "ann", ["ann"]) as ann:
                os.kill(pids[1], signal.SIGCONT)
                os.kill(pids[0], signal.SIGSTOP)
                try:
                    async with member(url, "bob", ["ann", "bob"]) as bob:
                        os.kill(pids[0], signal.SIGCONT)
                        with trio.fail_after(PATIENCE):
                            assert await ann.recv_json() == {"type": "joined", "username": "bob"}
                            await bob.send_json({"type": "chat", "text": "across workers"})
                            said = await ann.recv_json()
                        assert (said["from"], said["text"]) == ("bob", "across workers")
                finally:
                    os.kill(pids[0], signal.SIGCONT)
        finally:
            os.kill(pids[1], signal.SIGCONT)
        command.signal(signal.SIGTERM)
        assert await command.wait() == 0, command.log()


async def test_room_chat_readiness_follows_redis(prefix: str) -> None:
    """--health on the room chat with Redis: ready is 503 while Redis is down, 200 once it is back."""
    with private_redis_server() as redis:
        room_chat_args = shlex.join(
            ["--redis", redis.url, "--redis-prefix", prefix, "--redis-presence-ttl", "1"]
        )
        argv = python_m("examples.room_chat:app", "--port", "0", "--health", "/health")
        async with open_command(argv, env={**os.environ, "ROOM_CHAT_ARGS": room_chat_args}) as command:
            await command.started()
            assert await http_get(command.port, "/health/ready") == (200, "ready\n")
            redis.stop()
            await command.expect("is unreachable")  # the broker noticed (presence refresh, TTL/3)
            assert await http_get(command.port, "/health/ready") == (503, "not ready\n")
            assert await http_get(command.port, "/health/live") == (200, "ok\n")
            redis.start()
            await command.expect("reachable again")
            assert await http_get(command.port, "/health/ready") == (200, "ready\n")
            command.signal(signal.SIGTERM)
            assert await command.wait() == 0, command.log()
