"""Two ``examples/room_chat.py`` processes on one Redis: the room chat across processes, end to end.

Each node is a real subprocess (``python examples/room_chat.py --port P --redis URL``) on a free
127.0.0.1 port; clients are ordinary WebSocket clients. Short presence settings keep the expiry
tests to a few seconds.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import trio

import trionos
from tests.redis_server import RedisServer, free_port, private_redis_server
from trionos.testing import expect_message, expect_silence, open_raw_peer

SCRIPT = Path(__file__).parents[1] / "examples" / "room_chat.py"
#: Members of a dead node must be announced within TTL + TTL/3; this adds room for a busy machine.
TTL = 1.0
ANNOUNCE_WITHIN = TTL + TTL / 3 + 3.0
#: Starting a Python process and connecting it to Redis, on a loaded machine.
START_TIMEOUT = 20.0
PATIENCE = 5.0


class Node:
    """A room_chat process; ``url`` is its WebSocket URL."""

    def __init__(self, process: trio.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"
        self.log = log

    async def dial(self) -> trio.SocketStream:
        """A TCP connection to the node (what :func:`open_raw_peer` needs)."""
        return await trio.open_tcp_stream("127.0.0.1", self.port)

    def tail(self) -> str:
        """The end of the node's log, for failure messages."""
        return tail(self.log)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def command(port: int, url: str, prefix: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--redis",
        url,
        "--redis-prefix",
        prefix,
        "--redis-presence-ttl",
        str(TTL),
        *extra,
    ]


async def wait_until_listening(process: trio.Process, port: int, log: Path) -> None:
    with trio.fail_after(START_TIMEOUT):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"room_chat exited with {process.returncode}:\n{tail(log)}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def open_node(
    url: str, prefix: str, tmp_path: Path, *extra: str, history: bool = False
) -> AsyncIterator[Node]:
    """Start a room_chat process on a free port and wait until it listens; SIGTERM it on exit.

    History is off unless asked for, so that the other tests see the messages without positions.
    """
    if not history:
        extra = (*extra, "--no-history")
    port = free_port()
    log = tmp_path / f"room_chat-{port}.log"
    with log.open("wb") as output:
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process, command(port, url, prefix, *extra), stdout=output, stderr=subprocess.STDOUT
            )
            process: trio.Process = await nursery.start(functools.partial(run, check=False))
            node = Node(process, port, log)
            try:
                await wait_until_listening(process, port, log)
                yield node
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(node: Node, username: str, room: str = "lobby", *, users: list[str]) -> AsyncIterator[Any]:
    """A client of ``node`` that joined ``room`` (the welcome must list ``users``)."""
    async with trionos.connect(node.url) as ws:
        await ws.send_json({"type": "join", "username": username, "room": room})
        await expect_message(ws, {"type": "welcome", "users": users}, timeout=PATIENCE)
        yield ws


def joined(name: str) -> dict[str, str]:
    return {"type": "joined", "username": name}


def left(name: str) -> dict[str, str]:
    return {"type": "left", "username": name}


def said(name: str, text: str) -> dict[str, object]:
    return {"type": "message", "from": name, "text": text, "time": ANY}


async def test_two_processes_share_rooms(redis: str, prefix: str, tmp_path: Path) -> None:
    """Join, chat, sender exclusion, presence in join order and `left` on abrupt disconnect, across nodes."""
    async with open_node(redis, prefix, tmp_path) as a, open_node(redis, prefix, tmp_path) as b:
        async with client(a, "ann", users=["ann"]) as ann:
            async with client(b, "bob", users=["ann", "bob"]) as bob:
                await expect_message(ann, joined("bob"), timeout=PATIENCE)
                async with client(a, "cid", users=["ann", "bob", "cid"]) as cid:
                    await expect_message(ann, joined("cid"))
                    await expect_message(bob, joined("cid"), timeout=PATIENCE)

                    await bob.send_json({"type": "chat", "text": "hi from b"})
                    await expect_message(ann, said("bob", "hi from b"), timeout=PATIENCE)
                    await expect_message(cid, said("bob", "hi from b"), timeout=PATIENCE)
                    await ann.send_json({"type": "chat", "text": "hi from a"})
                    await expect_message(cid, said("ann", "hi from a"))
                    await expect_message(bob, said("ann", "hi from a"), timeout=PATIENCE)
                    await expect_silence(ann, timeout=0.3)  # the sender gets nothing back
                    await expect_silence(bob, timeout=0.3)

                    # Usernames are unique in a room across nodes; other rooms are separate.
                    async with trionos.connect(b.url) as dup:
                        await dup.send_json({"type": "join", "username": "ann"})
                        taken = "username 'ann' is already taken in room 'lobby'"
                        await expect_message(dup, {"type": "error", "reason": taken}, timeout=PATIENCE)
                        await dup.send_json({"type": "join", "username": "ann", "room": "kitchen"})
                        await expect_message(dup, {"type": "welcome", "users": ["ann"]}, timeout=PATIENCE)

                    # A client on b that vanishes without a close frame is announced on a too.
                    # Node has what open_raw_peer uses (dial, url), not a whole AppServer.
                    async with open_raw_peer(b) as dan:  # type: ignore[arg-type]
                        await dan.send_json({"type": "join", "username": "dan"})
                        await expect_message(dan, {"type": "welcome", "users": ["ann", "bob", "cid", "dan"]})
                        for ws in (ann, bob, cid):
                            await expect_message(ws, joined("dan"), timeout=PATIENCE)
                        await dan.abort()
                    for ws in (ann, bob, cid):
                        await expect_message(ws, left("dan"), timeout=PATIENCE)
                await expect_message(ann, left("cid"))
                await expect_message(bob, left("cid"), timeout=PATIENCE)
            await expect_message(ann, left("bob"), timeout=PATIENCE)


async def test_a_killed_nodes_members_are_announced_as_left(redis: str, prefix: str, tmp_path: Path) -> None:
    """After SIGKILL on one node, the other announces its members as `left` within TTL + TTL/3."""
    async with open_node(redis, prefix, tmp_path) as a:
        async with client(a, "ann", users=["ann"]) as ann:
            async with (
                open_node(redis, prefix, tmp_path) as b,
                client(b, "bob", users=["ann", "bob"]),
                client(b, "bea", users=["ann", "bob", "bea"]),
            ):
                await expect_message(ann, joined("bob"), timeout=PATIENCE)
                await expect_message(ann, joined("bea"), timeout=PATIENCE)
                b.process.kill()
                await b.process.wait()
                killed = trio.current_time()
                with trio.fail_after(ANNOUNCE_WITHIN):
                    announced = [await ann.recv_json() for _ in range(2)]
                assert sorted(announced, key=str) == [left("bea"), left("bob")], b.tail()
                assert trio.current_time() - killed < ANNOUNCE_WITHIN
                await expect_silence(ann, timeout=TTL)  # announced once
            async with client(a, "cid", users=["ann", "cid"]):
                await expect_message(ann, joined("cid"))


async def test_a_stopping_node_says_goodbye_for_its_members(redis: str, prefix: str, tmp_path: Path) -> None:
    """On SIGTERM a node announces its members as `left` on the other nodes at once, not after the TTL."""
    async with open_node(redis, prefix, tmp_path) as a, client(a, "ann", users=["ann"]) as ann:
        async with open_node(redis, prefix, tmp_path) as b, client(b, "bob", users=["ann", "bob"]):
            await expect_message(ann, joined("bob"), timeout=PATIENCE)
            b.process.send_signal(signal.SIGTERM)
            with trio.fail_after(TTL / 2):  # well before expiry could have done it
                assert await ann.recv_json() == left("bob")
            await b.process.wait()
            assert b.process.returncode == 0, b.tail()
        await expect_silence(ann, timeout=TTL * 2)  # and no second announcement from expiry


async def test_redis_restart_during_a_session(prefix: str, tmp_path: Path) -> None:
    """While Redis restarts, each node's members still talk; then cross-node chat resumes by itself."""
    with private_redis_server() as server:
        await restart_during_a_session(server, prefix, tmp_path)


async def restart_during_a_session(server: RedisServer, prefix: str, tmp_path: Path) -> None:
    async with open_node(server.url, prefix, tmp_path) as a, open_node(server.url, prefix, tmp_path) as b:
        async with (
            client(a, "ann", users=["ann"]) as ann,
            client(a, "al", users=["ann", "al"]) as al,
            client(b, "bob", users=["ann", "al", "bob"]) as bob,
        ):
            await expect_message(ann, joined("al"))
            await expect_message(ann, joined("bob"), timeout=PATIENCE)
            await expect_message(al, joined("bob"), timeout=PATIENCE)

            await trio.to_thread.run_sync(server.stop)
            await ann.send_json({"type": "chat", "text": "during"})
            await expect_message(al, said("ann", "during"))  # local delivery goes on
            await expect_silence(bob, timeout=0.5)  # dropped: Redis is down

            await trio.to_thread.run_sync(server.start)
            await chat_until_heard(ann, "ann", bob, "a-to-b")
            await chat_until_heard(bob, "bob", ann, "b-to-a")


async def chat_until_heard(sender: Any, name: str, receiver: Any, tag: str) -> None:
    """Chat ``tag-N`` every 0.2 s until ``receiver`` hears one (cross-node delivery is back)."""
    with trio.fail_after(PATIENCE + TTL):
        for attempt in range(10_000):
            await sender.send_json({"type": "chat", "text": f"{tag}-{attempt}"})
            with trio.move_on_after(0.2):
                while True:
                    message = await receiver.recv_json()
                    if message.get("from") == name and message["text"].startswith(tag):
                        return


async def test_redis_down_at_start_up_exits_with_broker_error(tmp_path: Path) -> None:
    """With nothing listening at --redis, room_chat exits with status 1 and says why, within the timeout."""
    port = free_port()
    args = command(port, f"redis://127.0.0.1:{free_port()}", "unused", "--redis-connect-timeout", "1")
    started = trio.current_time()
    with trio.fail_after(START_TIMEOUT):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 1, output
    assert "cannot reach Redis at redis://127.0.0.1:" in output and "within 1 s" in output, output
    assert "Traceback" not in output, output
    assert trio.current_time() - started < START_TIMEOUT


def at(message: dict[str, Any], epoch: Any, offset: int) -> dict[str, Any]:
    """*message* as a room with history sends it: with its epoch and offset."""
    return {**message, "epoch": epoch, "offset": offset}


async def test_a_client_recovers_on_another_process_and_after_a_restart(
    redis: str, prefix: str, tmp_path: Path
) -> None:
    """With history (the default), a client that comes back to another or a restarted process recovers."""
    async with open_node(redis, prefix, tmp_path, history=True) as a:
        async with trionos.connect(a.url) as ann:
            await ann.send_json({"type": "join", "username": "ann", "room": "r"})
            welcome = await ann.recv_json()
            epoch = welcome["epoch"]
            async with open_node(redis, prefix, tmp_path, history=True) as b:
                async with trionos.connect(b.url) as bob:
                    await bob.send_json({"type": "join", "username": "bob", "room": "r"})
                    assert (await bob.recv_json())["epoch"] == epoch
                    await expect_message(ann, joined("bob"), timeout=PATIENCE)
                    await ann.send_json({"type": "chat", "text": "one"})
                    await expect_message(
                        bob, {**said("ann", "one"), "epoch": ANY, "offset": 1}, timeout=PATIENCE
                    )
                await expect_message(ann, left("bob"), timeout=PATIENCE)
            for text in ("two", "three"):
                await ann.send_json({"type": "chat", "text": text})
            since = {"epoch": epoch, "offset": 1}
            async with trionos.connect(a.url) as bob:  # another process than before
                await bob.send_json({"type": "join", "username": "bob", "room": "r", "since": since})
                # ann's "three" may still be on its way into the history when bob joins: the
                # welcome says the latest offset at that moment, and either way bob gets both
                # messages once, in order (replayed, or live after the seam).
                with trio.fail_after(PATIENCE):
                    back = await bob.recv_json()
                assert back["offset"] in (2, 3), back
                assert back == {
                    "type": "welcome",
                    "users": ["ann", "bob"],
                    "epoch": epoch,
                    "offset": back["offset"],
                    "recovered": True,
                }
                await expect_message(
                    bob, {**said("ann", "two"), "epoch": epoch, "offset": 2}, timeout=PATIENCE
                )
                await expect_message(
                    bob, {**said("ann", "three"), "epoch": epoch, "offset": 3}, timeout=PATIENCE
                )
    async with open_node(redis, prefix, tmp_path, history=True) as restarted:
        async with trionos.connect(restarted.url) as bob:
            await bob.send_json({"type": "join", "username": "bob", "room": "r", "since": since})
            again = {"type": "welcome", "users": ["bob"], "epoch": epoch, "offset": 3, "recovered": True}
            await expect_message(bob, again, timeout=PATIENCE)
