"""Room chat: the typed chat protocol with rooms, and a page to use it from a browser.

``python examples/room_chat.py [--host H] [--port P] [--workers N] [--heartbeat-interval S]
[--heartbeat-timeout S] [--redis URL [--redis-presence-ttl S] [--redis-prefix P]
[--redis-connect-timeout S]]``, or with the command: ``trionos examples.room_chat:app``, whose
app takes the flags below that are not the server's from ``ROOM_CHAT_ARGS`` (e.g.
``ROOM_CHAT_ARGS="--redis redis://127.0.0.1:6379" trionos examples.room_chat:app --workers 2``).

* ``GET /`` serves the chat page (``room_chat.html``), ``GET /trionos.js`` the browser client it
  imports (:func:`trionos.respond_client`); the WebSocket is on the same port.
* Client -> server: ``join`` (``username``, optional ``room``, default "lobby"), ``chat``, ``leave``.
* Server -> client: ``welcome`` (the room's users in join order) to the joiner, ``joined`` to the
  others, ``message`` to everyone in the room but the sender, ``left`` when someone leaves,
  disconnects or times out, and ``error`` for bad input (the connection stays open).
* A client is in one room at a time: joining another room leaves the first. Joining the room it is
  in under the same name keeps its seat: it gets a welcome (and a replay), the others hear nothing.
* History (on by default: the last 200 messages or 10 minutes per room, ``--history-messages``,
  ``--history-seconds``, ``--no-history``): each ``message`` carries its ``offset``, ``welcome``
  the room's ``epoch`` and latest ``offset``. A client that comes back sends ``join`` with
  ``since`` (``{"epoch": ..., "offset": N}``) and gets ``welcome`` with ``recovered`` (false when
  something may be missing), then every ``message`` after ``N`` that it missed, then live traffic.
  A user's identity across reconnections is the username: a message is never replayed to the
  user who sent it. ``joined``/``left`` are presence, not history. A ``join`` with ``history``
  (a count, instead of ``since``) gets the room's last messages after the welcome.
* ``message`` carries ``time``: the server's clock when it accepted the chat (integer ms since the
  Unix epoch), kept on replay. ``join``, ``chat`` and ``leave`` may carry an ``id`` (string or
  integer): a chat with one is answered ``ack`` (its ``offset`` and ``time``), and the ``welcome``,
  ``left`` or ``error`` a message caused carries its id. See :mod:`trionos.chat`.
* Built on :class:`trionos.Channels`: one handler per client message; decoding, errors, the rate
  limit, presence (``joined``/``left``, also for a node that died) and goodbyes are the framework's.
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
import time
from pathlib import Path
from typing import TypeAlias

import trionos
from trionos.chat import (
    CLIENT_CODEC,
    MAX_ROOM_BYTES,
    SERVER_CODEC,
    Ack,
    Chat,
    ClientMessage,
    Error,
    Join,
    Joined,
    Leave,
    Left,
    Message,
    ServerMessage,
    Welcome,
    normalize_name,
)

PAGE = (Path(__file__).parent / "room_chat.html").read_text(encoding="utf-8")


async def page(req: trionos.Request) -> None:
    """Plain HTTP: the chat page at ``/``, the browser client it imports at ``/trionos.js`` (the
    server answers 404 to what is left unanswered)."""
    if req.path == "/":
        await req.respond_html(PAGE)
    elif req.path == "/trionos.js":
        await trionos.respond_client(req)


#: The room chat: one handler per client message; rooms, presence, acks and goodbyes are the framework's.
channels = trionos.Channels(
    CLIENT_CODEC,
    SERVER_CODEC,
    error=Error,
    joined=lambda member: Joined(member.name or ""),  # (a nameless member is never announced)
    left=lambda member: Left(member.name or ""),
    name_taken="username {name!r} is already taken in room {room!r}",
    single_room=True,
    http=page,
)
Session: TypeAlias = trionos.Session[None, ServerMessage]


@channels.on(Join)
async def join(session: Session, message: Join) -> None:
    try:  # names as the chat protocol compares them: look-alikes are one name, or refused
        username = normalize_name(message.username, metrics=session.hub.metrics)
        room = normalize_name(message.room, what="room", limit=MAX_ROOM_BYTES, metrics=session.hub.metrics)
    except ValueError as exc:
        raise trionos.Refuse(str(exc)) from None
    await session.join(
        room,
        name=username,
        # Who the user is across reconnections: the history never replays a message to its sender.
        identity=username,
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
    except trionos.BrokerUncertain as exc:
        # History in Redis, which answered too late: it may have kept and delivered the message.
        raise trionos.Refuse(f"message may not have been sent: {exc}") from exc
    except trionos.BrokerError as exc:
        # History in Redis, and Redis unreachable: the message got no position and reached nobody.
        raise trionos.Refuse(f"message not sent: {exc}") from exc
    if message.id is not None:
        await session.reply(Ack(offset=sent.position.offset if sent.position else None, time=now))


@channels.on(Leave)
async def leave(session: Session, message: Leave) -> None:
    if not await session.leave() and message.id is not None:
        raise trionos.Refuse("not in a room")  # a leave with an id always gets its answer


#: The room chat's history: the last 200 messages or 10 minutes per room, whichever is less.
HISTORY = trionos.HistoryBounds(max_messages=200, max_age=600.0)


def make_hub(
    broker: trionos.Broker | None = None,
    *,
    history: trionos.HistoryBounds | None = HISTORY,
    rate_limit: trionos.RateLimit | None = None,
    metrics: trionos.Metrics | None = None,
) -> trionos.Hub:
    """The room chat's hub: typed broadcasts, history (None: off), ``left`` for a dead node's members.

    Each history message carries its ``epoch`` beside its ``offset``, so a live page sees at once
    that a room's history restarted."""
    return channels.new_hub(
        broker=broker, history=history, rate_limit=rate_limit, metrics=metrics, epoch_field="epoch"
    )


def make_handler(hub: trionos.Hub, *, metrics: bool = False) -> trionos.Handler:
    """The room chat's request handler on ``hub``; with ``metrics``, ``GET /metrics`` for Prometheus."""
    return channels.replace(metrics_path="/metrics" if metrics else None).handler(hub)


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


def make_app(args: argparse.Namespace) -> trionos.Channels[None, ClientMessage, ServerMessage]:
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
    broker = make_broker(args)  # now: without the redis extra, the ImportError is the last word
    return channels.replace(
        hub=lambda: make_hub(broker, history=history, rate_limit=limit, metrics=metrics),
        metrics=metrics,
        metrics_path="/metrics" if args.metrics else None,
    )


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
