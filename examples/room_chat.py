"""Room chat: the typed chat protocol with rooms, and a page to use it from a browser.

``python examples/room_chat.py [--host H] [--port P] [--workers N] [--heartbeat-interval S]
[--heartbeat-timeout S] [--redis URL [--redis-presence-ttl S] [--redis-prefix P]
[--redis-connect-timeout S]]``, or with the command: ``trionos examples.room_chat:app``, whose
app takes the flags below that are not the server's from ``ROOM_CHAT_ARGS`` (e.g.
``ROOM_CHAT_ARGS="--redis redis://127.0.0.1:6379" trionos examples.room_chat:app --workers 2``).

* ``GET /`` serves the chat page (``room_chat.html``); the WebSocket is on the same port.
* Client -> server: ``join`` (``username``, optional ``room``, default "lobby"), ``chat``, ``leave``.
* Server -> client: ``welcome`` (the room's users in join order) to the joiner, ``joined`` to the
  others, ``message`` to everyone in the room but the sender, ``left`` when someone leaves,
  disconnects or times out, and ``error`` for bad input (the connection stays open).
* A client is in one room at a time: joining another room leaves the first.
* History (on by default: the last 200 messages or 10 minutes per room, ``--history-messages``,
  ``--history-seconds``, ``--no-history``): each ``message`` carries its ``offset``, ``welcome``
  the room's ``epoch`` and latest ``offset``. A client that comes back sends ``join`` with
  ``since`` (``{"epoch": ..., "offset": N}``) and gets ``welcome`` with ``recovered`` (false when
  something may be missing), then every ``message`` after ``N`` that it missed, then live traffic.
  A user's identity across reconnections is the username: a message is never replayed to the
  user who sent it. ``joined``/``left`` are presence, not history.
* The raw text ``ping`` is answered with ``pong`` (an application-level heartbeat for browsers).
* ``--rate-limit N`` (default 10) messages per second per client, in bursts of up to 2N: a message
  over the limit gets an ``error`` and is not acted on; a client that sends 50 more while refused
  is closed with 1008. ``--rate-limit 0`` switches the limit off.
* ``--metrics`` serves the hub's counters at ``GET /metrics`` in the Prometheus text format (needs
  ``pip install trionos[prometheus]``); see docs/metrics.md.
* ``--workers N`` serves with N worker processes on the one port (see docs/running.md); without
  ``--redis`` each worker has rooms of its own.
* ``--redis redis://127.0.0.1:6379`` makes rooms span every process started with the same Redis:
  messages, ``joined``/``left`` and ``welcome`` (everyone in the room, on every node, in join
  order) work across processes, usernames are unique per room across them, and the members of a
  process that dies are announced as ``left`` within about ``--redis-presence-ttl`` seconds plus a
  third of it. If Redis cannot be reached at start-up the process exits with an error (status 1).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import trionos
from trionos.chat import (
    CLIENT_CODEC,
    SERVER_CODEC,
    Chat,
    Error,
    Join,
    Joined,
    Leave,
    Left,
    Message,
    Welcome,
)

PAGE = (Path(__file__).parent / "room_chat.html").read_text(encoding="utf-8")


class RoomChat:
    """One chat session: which room the client is in, under which name."""

    def __init__(self, hub: trionos.Hub, client: trionos.Client) -> None:
        self.hub = hub
        self.client = client
        self.room: str | None = None

    async def reply(self, message: object) -> None:
        await self.client.ws.send_message(message, SERVER_CODEC)

    async def handle(self, message: Join | Chat | Leave) -> None:
        match message:
            case Join(username=username, room=room, since=since):
                await self.join(username, room, since)
            case Chat(text=text):
                if self.room is None:
                    await self.reply(Error("join a room before sending chat messages"))
                    return
                assert self.client.name is not None
                try:
                    await self.hub.broadcast(self.room, Message(self.client.name, text), exclude=self.client)
                except trionos.BrokerError as exc:
                    # History in Redis, and Redis unreachable: the message got no position and
                    # reached nobody; say so rather than pretend it was sent.
                    await self.reply(Error(f"message not sent: {exc}"))
            case Leave():
                await self.leave()

    async def join(self, username: str, room: str, since: trionos.Position | None = None) -> None:
        if not username.strip():
            await self.reply(Error("username must not be empty"))
            return
        taken = await self.hub.presence(room)  # on every node, with a shared broker
        if self.room == room and self.client.name in taken:
            taken.remove(self.client.name)  # joining the room it is in again, maybe under a new name
        if username in taken:
            await self.reply(Error(f"username {username!r} is already taken in room {room!r}"))
            return
        await self.leave()
        self.client.name = username
        # The username is who the user is across reconnections: the history never replays a
        # message to the user who sent it.
        self.client.identity = username
        if self.hub.history_bounds(room) is None:
            self.hub.join(self.client, room)
            self.room = room
            await self.reply(Welcome(tuple(await self.hub.presence(room))))
        else:
            users = [name for name in await self.hub.presence(room) if name != username] + [username]

            def welcome(recovery: trionos.Recovery) -> Welcome:
                # Written before the replayed messages, in the same step as the join.
                recovered = None if since is None else recovery.complete
                return Welcome(users, recovery.position.epoch, recovery.position.offset, recovered)

            try:
                await self.hub.join_with_history(self.client, room, since=since, welcome=welcome)
            except trionos.BrokerError as exc:
                await self.reply(Error(f"cannot join {room!r} now: {exc}"))
                return
            self.room = room
        await self.hub.broadcast(room, Joined(username), exclude=self.client, history=False)

    async def leave(self) -> None:
        if self.room is None:
            return
        room, self.room = self.room, None
        self.hub.leave(self.client, room)
        assert self.client.name is not None
        await self.hub.broadcast(room, Left(self.client.name), history=False)


#: The room chat's history: the last 200 messages or 10 minutes per room, whichever is less.
HISTORY = trionos.HistoryBounds(max_messages=200, max_age=600.0)


def make_hub(
    broker: trionos.Broker | None = None,
    *,
    history: trionos.HistoryBounds | None = HISTORY,
    rate_limit: trionos.RateLimit | None = None,
    metrics: trionos.Metrics | None = None,
) -> trionos.Hub:
    """The room chat's hub: typed broadcasts, history, and ``left`` for the members of a dead node.

    With a shared ``broker`` (Redis), when a process dies without saying goodbye, one surviving
    node is told about each of its members and announces ``left`` to the room on every node.
    ``history=None`` turns the rooms' history off.
    """
    hub: trionos.Hub

    async def announce_expired(member: trionos.Member) -> None:
        if member.name is not None:
            await hub.broadcast(member.room, Left(member.name), history=False)

    hub = trionos.Hub(
        codec=SERVER_CODEC,
        broker=broker,
        on_member_expired=announce_expired,
        history=history,
        rate_limit=rate_limit,
        metrics=metrics,
    )
    return hub


def make_handler(hub: trionos.Hub, *, metrics: bool = False) -> Callable[[trionos.Request], Awaitable[None]]:
    """The room chat's request handler, using ``hub`` for rooms and broadcast.

    With ``metrics``, ``GET /metrics`` answers with ``hub.metrics`` for Prometheus.
    """

    async def handler(req: trionos.Request) -> None:
        if not req.is_upgrade:
            if req.path == "/":
                await req.respond_html(PAGE)
            elif metrics and req.path == "/metrics":
                await trionos.respond_metrics(req, hub.metrics)
            else:
                await req.respond_text("Not Found", status=404)
            return
        ws = await req.accept(answer_text_ping=True)
        async with hub.client(ws) as client:
            session = RoomChat(hub, client)
            try:
                async for raw in ws:
                    if not hub.admit(client):  # over its rate limit
                        if ws.closed:
                            break  # closed with 1008: it kept sending while refused
                        await session.reply(Error("too many messages: slow down"))
                        continue
                    try:
                        message = CLIENT_CODEC.decode(raw)
                    except trionos.DecodeError as exc:
                        await session.reply(Error(str(exc)))
                        continue
                    await session.handle(message)
            finally:
                # Runs on every exit, also when the heartbeat or a shutdown cancelled us:
                # shield the goodbye and bound it.
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await session.leave()

    return handler


#: The flags that are the server's (given to trionos.run), not the app's.
SERVER_FLAGS = ("host", "port", "workers", "heartbeat_interval", "heartbeat_timeout")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Room chat with typed JSON messages.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="seconds between pings")
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=60.0, help="seconds of silence before close"
    )
    parser.add_argument(
        "--rate-limit", type=float, default=10.0, help="messages per second per client (0: no limit)"
    )
    parser.add_argument("--metrics", action="store_true", help="serve Prometheus counters at /metrics")
    parser.add_argument(
        "--history-messages", type=int, default=200, help="messages kept per room (default 200)"
    )
    parser.add_argument(
        "--history-seconds", type=float, default=600.0, help="seconds a message is kept (default 600)"
    )
    parser.add_argument("--no-history", action="store_true", help="keep no history (no recovery)")
    parser.add_argument("--redis", metavar="URL", help="share rooms with other processes through this Redis")
    parser.add_argument(
        "--redis-presence-ttl",
        type=float,
        default=15.0,
        help="seconds after which the members of a silent process are announced as left (default 15)",
    )
    parser.add_argument("--redis-prefix", default="trionos", help="key and channel prefix (default trionos)")
    parser.add_argument(
        "--redis-connect-timeout", type=float, default=5.0, help="seconds to reach Redis at start-up"
    )
    return parser.parse_args(argv)


def make_broker(args: argparse.Namespace) -> trionos.Broker | None:
    """The broker the command line asks for: Redis with ``--redis``, else none (one process)."""
    if not args.redis:
        return None
    return trionos.RedisBroker(
        args.redis,
        prefix=args.redis_prefix,
        presence_ttl=args.redis_presence_ttl,
        connect_timeout=args.redis_connect_timeout,
    )


def make_app(args: argparse.Namespace) -> trionos.LifespanApp:
    """The room chat as an app for :func:`trionos.run`: its hub lives as long as the server."""
    limit = (
        trionos.RateLimit(args.rate_limit, burst=max(1, int(2 * args.rate_limit)))
        if args.rate_limit
        else None
    )
    history = (
        None
        if args.no_history
        else trionos.HistoryBounds(max_messages=args.history_messages, max_age=args.history_seconds)
    )
    # One Metrics for server and hub: /metrics shows connections and rooms together.
    metrics = trionos.Metrics()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[trionos.Handler]:
        hub = make_hub(make_broker(args), history=history, rate_limit=limit, metrics=metrics)
        async with hub:
            yield make_handler(hub, metrics=args.metrics)

    return trionos.LifespanApp(lifespan, metrics=metrics)


#: What ``trionos examples.room_chat:app`` serves: the app flags given in ``ROOM_CHAT_ARGS``.
app = make_app(parse_args(shlex.split(os.environ.get("ROOM_CHAT_ARGS", ""))))


def main() -> None:
    args = parse_args()
    heartbeat = trionos.Heartbeat(interval=args.heartbeat_interval, timeout=args.heartbeat_timeout)
    target: trionos.App | str = make_app(args)
    if args.workers > 1:
        # Every worker imports the module: hand it the app's flags through the environment.
        app_flags = [
            f"--{name.replace('_', '-')}={value}"
            for name, value in vars(args).items()
            if name not in SERVER_FLAGS and not isinstance(value, bool) and value is not None
        ]
        app_flags += [f"--{name.replace('_', '-')}" for name, value in vars(args).items() if value is True]
        os.environ["ROOM_CHAT_ARGS"] = shlex.join(app_flags)
        target = "room_chat:app"
    trionos.run(
        target,
        host=args.host,
        port=args.port,
        workers=args.workers,
        app_dir=str(Path(__file__).parent),
        heartbeat=heartbeat,
    )


if __name__ == "__main__":
    main()
