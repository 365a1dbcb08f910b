"""Issue #25, findings 7 and 15: what names do to the room chat.

    python bench/adversarial_names.py

The room chat of ``examples/room_chat.py`` on a server on 127.0.0.1 (port 0), in this process:

* **long names**: 10 clients join one room with 1 MB usernames, then a client named ``zed``
  joins. Reported: how many long names were let in, and the size of ``zed``'s welcome.
* **look-alikes**: ``alice`` joins, then ``alice`` + U+200B, ``alice `` (a space), Cyrillic
  ``a`` + ``lice``, ``alice`` + U+202E, ``a`` NUL ``b``. Reported: how many joined next to her.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import trio

import trionos

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import room_chat

LOOK_ALIKES = ["alice\u200b", "alice ", "\u0430lice", "alice\u202e", "a\x00b"]


async def join(
    url: str, name: str, stack: list[trionos.WebSocket], nursery: trio.Nursery
) -> dict[str, object]:
    """Connect, join room "tea" as *name*, return the answer; the connection stays open."""
    opened = trio.Event()
    answer: dict[str, object] = {}

    async def hold() -> None:
        async with trionos.connect(url, max_message_size=64 << 20) as ws:
            await ws.send_json({"type": "join", "username": name, "room": "tea"})
            reply = await ws.recv()
            answer.update(json.loads(reply), _bytes=len(reply))
            stack.append(ws)
            opened.set()
            await trio.sleep_forever()

    nursery.start_soon(hold)
    await opened.wait()
    return answer


async def main() -> None:
    """Run both parts and print their figures."""
    async with room_chat.make_hub(history=None) as hub, trio.open_nursery() as nursery:
        serve = functools.partial(trionos.serve, 0, room_chat.make_handler(hub), host="127.0.0.1")
        server = await nursery.start(serve)
        url = f"ws://127.0.0.1:{server.port}/"
        stack: list[trionos.WebSocket] = []
        long_in = 0
        for n in range(10):
            answer = await join(url, str(n) * 1_000_000, stack, nursery)
            long_in += answer["type"] == "welcome"
        zed = await join(url, "zed", stack, nursery)
        print(f"long names: {long_in} of 10 1 MB usernames joined; zed's welcome is {zed['_bytes']:,} bytes")
        await join(url, "alice", stack, nursery)
        joined = [
            name for name in LOOK_ALIKES if (await join(url, name, stack, nursery))["type"] == "welcome"
        ]
        print(f"look-alikes: {len(joined)} of {len(LOOK_ALIKES)} joined next to alice: {joined!r}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
