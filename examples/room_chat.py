"""Room chat: the typed chat protocol with rooms, and a page to use it from a browser.

``python examples/room_chat.py [--host H] [--port P] [--heartbeat-interval S] [--heartbeat-timeout S]
[--redis URL [--redis-presence-ttl S] [--redis-prefix P] [--redis-connect-timeout S]]``

* ``GET /`` serves the chat page (``room_chat.html``), ``GET /trionos.js`` the browser client it
  imports (:func:`trionos.respond_client`); the WebSocket is on the same port.
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
* ``--redis redis://127.0.0.1:6379`` makes rooms span every process started with the same Redis:
  messages, ``joined``/``left`` and ``welcome`` (everyone in the room, on every node, in join
  order) work across processes, usernames are unique per room across them, and the members of a
  process that dies are announced as ``left`` within about ``--redis-presence-ttl`` seconds plus a
  third of it. If Redis cannot be reached at start-up the process exits with an error (status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

from _example import run_server, server_arguments

import trionos
from trionos.chat import (
    CLIENT_CODEC,
    SERVER_CODEC,
    Ack,
    Chat,
    Error,
    Join,
    Joined,
    Leave,
    Left,
    Message,
    ServerMessage,
    Welcome,
)

logger = logging.getLogger("room_chat")

PAGE = (Path(__file__).parent / "room_chat.html").read_text(encoding="utf-8")


async def page(req: trionos.Request) -> None:
    """Plain HTTP: the chat page at ``/``, the browser client at ``/trionos.js``, 404 elsewhere."""
    if req.path == "/":
        await req.respond_html(PAGE)
    elif req.path == "/trionos.js":  # the browser client the page imports
        await trionos.respond_client(req)
    else:
        await req.respond_text("Not Found", status=404)


#: The room chat: one handler per client message; rooms, presence, acks and goodbyes are the framework's.
channels = trionos.Channels(
    CLIENT_CODEC,
    SERVER_CODEC,
    error=Error,
    joined=lambda member: Joined(member.name),
    left=lambda member: Left(member.name),
    name_taken="username {name!r} is already taken in room {room!r}",
    single_room=True,
    http=page,
)
Session: TypeAlias = trionos.Session[None, ServerMessage]


@channels.on(Join)
async def join(session: Session, message: Join) -> None:
    if not message.username.strip():
        raise trionos.Refuse("username must not be empty")
    await session.join(
        message.room,
        name=message.username,
        # Who the user is across reconnections: the history never replays a message to its sender.
        identity=message.username,
        since=message.since,
        history=message.history,
        welcome=lambda j: Welcome(j.names, j.epoch, j.offset, j.recovered),
    )


@channels.on(Chat)
async def chat(session: Session, message: Chat) -> None:
    if session.room is None or session.name is None:
        raise trionos.Refuse("join a room before sending chat messages")
    now = time.time_ns() // 1_000_000  # the message's time: milliseconds since the Unix epoch
    try:
        sent = await session.broadcast(session.room, Message(session.name, message.text, time=now))
    except trionos.BrokerError as exc:
        # History in Redis, and Redis unreachable: the message got no position and reached nobody.
        raise trionos.Refuse(f"message not sent: {exc}") from exc
    if message.id is not None:
        await session.reply(Ack(offset=sent.position and sent.position.offset, time=now))


@channels.on(Leave)
async def leave(session: Session, message: Leave) -> None:
    await session.leave()


#: The room chat's history: the last 200 messages or 10 minutes per room, whichever is less.
HISTORY = trionos.HistoryBounds(max_messages=200, max_age=600.0)


def make_hub(
    broker: trionos.Broker | None = None,
    *,
    history: trionos.HistoryBounds | None = HISTORY,
    rate_limit: trionos.RateLimit | None = None,
) -> trionos.Hub:
    """The room chat's hub: typed broadcasts, history (None: off), ``left`` for a dead node's members."""
    return channels.new_hub(broker=broker, history=history, rate_limit=rate_limit)


def make_handler(hub: trionos.Hub, *, metrics: bool = False) -> trionos.Handler:
    """The room chat's request handler on ``hub``; with ``metrics``, ``GET /metrics`` for Prometheus."""
    return channels.replace(metrics_path="/metrics" if metrics else None).handler(hub)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = server_arguments("Room chat with typed JSON messages.")
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


def main() -> None:
    args = parse_args()
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
    hub = make_hub(make_broker(args), history=history, rate_limit=limit)
    heartbeat = trionos.Heartbeat(interval=args.heartbeat_interval, timeout=args.heartbeat_timeout)

    async def with_hub(run: Callable[[], Awaitable[None]]) -> None:
        async with hub:
            await run()

    failures: list[trionos.BrokerError] = []
    try:
        run_server(
            args,
            make_handler(hub, metrics=args.metrics),
            around=with_hub,
            heartbeat=heartbeat,
            # One Metrics for server and hub: /metrics shows connections and rooms together.
            metrics=hub.metrics,
        )
    except* trionos.BrokerError as group:
        failures.extend(e for e in group.exceptions if isinstance(e, trionos.BrokerError))
    if failures:
        logger.error("%s", failures[0])
        sys.exit(1)


if __name__ == "__main__":
    main()
