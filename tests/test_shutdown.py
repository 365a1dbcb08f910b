"""Stopping a server that has a hub: every client is closed with 1001, nothing logged as an error.

The room chat says ``left`` from each handler's ``finally`` (shielded), so on shutdown every handler
broadcasts into a hub whose fan-out is stopping too: that used to raise ``BrokenResourceError``,
close the client with 1011 "internal error" and log a traceback per client.
"""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trionos
from tests.helpers import close_code
from tests.redis_server import free_port
from tests.test_room_chat_redis import START_TIMEOUT, wait_until_listening

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from room_chat import make_handler, make_hub

SCRIPT = Path(__file__).parents[1] / "examples" / "room_chat.py"
ROOMS = 4
PER_ROOM = 50


async def chat_member(url: str, name: str, room: str, ready: trio.Semaphore, codes: list[int]) -> None:
    """Join ``room``, say so on ``ready``, then read until closed and note the close code."""
    async with trionos.connect(url) as ws:
        await ws.send_json({"type": "join", "username": name, "room": room})
        while (await ws.recv_json())["type"] != "welcome":
            pass
        ready.release()
        codes.append(await close_code(ws))


async def fill_rooms(nursery: trio.Nursery, url: str, codes: list[int]) -> None:
    """Start ROOMS x PER_ROOM members in ``nursery``; return once all of them are welcomed."""
    ready = trio.Semaphore(0)
    for i in range(ROOMS * PER_ROOM):
        nursery.start_soon(chat_member, url, f"user{i}", f"room{i % ROOMS}", ready, codes)
    for _ in range(ROOMS * PER_ROOM):
        await ready.acquire()


async def test_cancelling_serve_with_a_hub_closes_every_member_with_1001(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelling serve and the hub together (as the examples do on SIGINT) closes all 200 members
    of four rooms with 1001 and logs no error."""
    codes: list[int] = []
    hub = make_hub()
    async with trio.open_nursery() as clients:
        # The examples' layout: serve runs in the outer nursery, the hub around the waiting task,
        # and one cancel stops both at once.
        async with trio.open_nursery() as outer:
            async with hub:
                server = await outer.start(
                    functools.partial(trionos.serve, 0, make_handler(hub), host="127.0.0.1")
                )
                await fill_rooms(clients, server.url, codes)
                outer.cancel_scope.cancel()
                await trio.sleep_forever()
    assert sorted(set(codes)) == [1001], {code: codes.count(code) for code in set(codes)}
    assert len(codes) == ROOMS * PER_ROOM
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


async def test_sigterm_closes_every_room_chat_client_with_1001(tmp_path: Path) -> None:
    """SIGTERM to examples/room_chat.py closes all 200 members of four rooms with 1001; the
    process exits with 0 and logs no traceback."""
    port = free_port()
    log = tmp_path / "room_chat.log"
    codes: list[int] = []
    args = [sys.executable, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process, args, stdout=output, stderr=subprocess.STDOUT, check=False
            )
            process: trio.Process = await nursery.start(run)
            await wait_until_listening(process, port, log)
            async with trio.open_nursery() as clients:
                await fill_rooms(clients, f"ws://127.0.0.1:{port}/", codes)
                process.send_signal(signal.SIGTERM)
            with trio.fail_after(START_TIMEOUT):
                await process.wait()
    text = log.read_text(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert sorted(set(codes)) == [1001], {code: codes.count(code) for code in set(codes)}
    assert len(codes) == ROOMS * PER_ROOM
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
