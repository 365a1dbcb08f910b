"""The room-chat protocol of ``examples/room_chat.py``, written with websockets on asyncio.

Client to server: ``{"type":"join","username":U,"room":R}``, ``{"type":"chat","text":T}``,
``{"type":"leave"}``. Server to client: ``{"type":"welcome","users":[...]}`` (in join order) to the joiner,
``{"type":"joined","username":U}`` and ``{"type":"left","username":U}`` to the others in the
room, ``{"type":"message","from":U,"text":T}`` to everyone in the room except the sender.
Fan-out uses ``websockets.asyncio.server.broadcast``. Runs on uvloop when it is installed.
"""

from __future__ import annotations

import json

from _common import BACKLOG, announce, parse_args, raise_nofile_limit, run_asyncio, stop_event
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


async def main_async(host: str, port: int) -> None:
    rooms: dict[str, dict[ServerConnection, str]] = {}

    def leave(ws: ServerConnection, room: str) -> None:
        members = rooms.get(room, {})
        username = members.pop(ws, None)
        if not members:
            rooms.pop(room, None)
        if username is not None:
            broadcast(members, json.dumps({"type": "left", "username": username}))

    async def handler(ws: ServerConnection) -> None:
        room: str | None = None
        try:
            async for raw in ws:
                try:
                    message = json.loads(raw)
                    kind = message["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send(
                        json.dumps({"type": "error", "reason": "expected a JSON object with a type"})
                    )
                    continue
                if kind == "join":
                    if room is not None:
                        leave(ws, room)
                    username, room = str(message.get("username", "")), str(message.get("room", "lobby"))
                    members = rooms.setdefault(room, {})
                    members[ws] = username
                    await ws.send(json.dumps({"type": "welcome", "users": list(members.values())}))
                    others = [m for m in members if m is not ws]
                    broadcast(others, json.dumps({"type": "joined", "username": username}))
                elif kind == "chat" and room is not None:
                    members = rooms[room]
                    out = json.dumps(
                        {"type": "message", "from": members[ws], "text": str(message.get("text", ""))}
                    )
                    broadcast([m for m in members if m is not ws], out)
                elif kind == "leave" and room is not None:
                    leave(ws, room)
                    room = None
        except ConnectionClosed:
            pass
        finally:
            if room is not None:
                leave(ws, room)

    stop = stop_event()
    async with serve(handler, host, port, backlog=BACKLOG, compression=None) as server:
        announce(next(iter(server.sockets)).getsockname()[1])
        await stop.wait()


def main() -> None:
    args = parse_args(__doc__)
    raise_nofile_limit()
    run_asyncio(main_async(args.host, args.port))


if __name__ == "__main__":
    main()
