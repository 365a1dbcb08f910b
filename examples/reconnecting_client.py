"""A room chat client that stays connected through server restarts.

``python examples/reconnecting_client.py --url ws://127.0.0.1:8080/ [--name N] [--room R] [--interval S]``

Start ``examples/room_chat.py`` first. The client joins room R as N and prints what it receives.
Lines typed on a terminal are sent as chat messages; when stdin is not a terminal it sends
"message 1", "message 2", ... every ``--interval`` seconds instead.

Stop the server with Ctrl-C and start it again: the client sees 1001 (going away), retries with
exponential backoff and full jitter (logged as warnings), and joins its room again once the server is
back. A message that could not be sent is sent after the reconnect. The client stops on a normal or
policy close from the server, at the end of the input, or on Ctrl-C (closing with 1000).

No message is lost across a reconnect: a :class:`trionos.Positions` remembers the offset of the last
message received in the room, the rejoin sends it as ``since``, and the server replays what was
missed before live traffic (a duplicate, should one arrive, is dropped). When the server could not
replay everything (it restarted, or the gap is older than its history), the client says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

import trionos
from trionos.chat import CLIENT_CODEC, SERVER_CODEC, Chat, Error, Join, Joined, Leave, Left, Message, Welcome


class Session:
    """What survives reconnects: who we are, where we chat, and the line that is not sent yet."""

    def __init__(self, name: str, room: str, lines: trio.MemoryReceiveChannel[str]) -> None:
        self.name = name
        self.room = room
        self.lines = lines
        self.unsent: str | None = None
        self.connections = 0
        #: The last position seen in each room: survives reconnects, sent back as ``since``.
        self.positions = trionos.Positions()

    async def on_connect(self, ws: trionos.WebSocket) -> None:
        """Run one connection: join, then print what arrives while sending our lines.

        Returns at the end of the input (done) or when the server closes normally; raises
        ``ConnectionClosed`` for other closes. ``run_reconnecting`` decides what happens next.
        """
        self.connections += 1
        if self.connections > 1:
            print("* reconnected")
        await ws.send_message(Join(self.name, self.room, since=self.positions.since(self.room)), CLIENT_CODEC)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.print_incoming, ws, nursery.cancel_scope)
            await self.send_lines(ws)
            # End of input: say goodbye; returning with the connection open means "done".
            await ws.send_message(Leave(), CLIENT_CODEC)
            nursery.cancel_scope.cancel()

    async def send_lines(self, ws: trionos.WebSocket) -> None:
        """Send every line as a chat message until the input ends.

        When the connection closes under us, the line is kept for the next connection and this
        waits to be cancelled: the reader task sees the close and ends this connection.
        """
        while True:
            if self.unsent is None:
                try:
                    self.unsent = await self.lines.receive()
                except trio.EndOfChannel:
                    return
            try:
                await ws.send_message(Chat(self.unsent), CLIENT_CODEC)
            except trionos.ConnectionClosed:
                await trio.sleep_forever()
            self.unsent = None

    async def print_incoming(self, ws: trionos.WebSocket, done: trio.CancelScope) -> None:
        """Print each message; on a normal close (1000, 1001) end the connection's tasks."""
        async for raw in ws:
            try:
                message = SERVER_CODEC.decode(raw)
            except trionos.DecodeError:
                print(f"? {raw!r}")
                continue
            match message:
                case Welcome(users=users, epoch=epoch, offset=offset, recovered=recovered):
                    print(f"* joined #{self.room} as {self.name}; here: {', '.join(users)}")
                    if epoch is not None and offset is not None:
                        self.positions.welcome(self.room, trionos.Position(epoch, offset), recovered)
                    if recovered is False:
                        print("* some messages may be missing: the server could not replay all of them")
                case Joined(username=username):
                    print(f"* {username} joined")
                case Left(username=username):
                    print(f"* {username} left")
                case Message(from_=sender, text=text, offset=offset, epoch=epoch):
                    if offset is not None and not self.positions.receive(self.room, offset, epoch):
                        continue  # already printed
                    print(f"<{sender}> {text}")
                    if (since := self.positions.recovery_due(self.room)) is not None:
                        # A new epoch or a missed message: rejoin at the last unbroken position.
                        await ws.send_message(Join(self.name, self.room, since=since), CLIENT_CODEC)
                case Error(reason=reason):
                    # After a dropped connection the server may still hold our old one for a while,
                    # so "username is already taken" can show up until its heartbeat times out.
                    print(f"! {reason}")
        done.cancel()


async def read_terminal(lines: trio.MemorySendChannel[str]) -> None:
    """Forward lines typed on the terminal; close the channel at the end of input (Ctrl-D)."""
    async with lines:
        while True:
            # readline blocks a thread; abandon it on cancellation so Ctrl-C is not held up.
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                return
            if line.strip():
                await lines.send(line.rstrip("\n"))


async def count_messages(lines: trio.MemorySendChannel[str], interval: float) -> None:
    """Produce "message 1", "message 2", ... every ``interval`` seconds, forever.

    The channel has no buffer, so while the client is disconnected the count waits for it.
    """
    async with lines:
        number = 0
        while True:
            await trio.sleep(interval)
            number += 1
            await lines.send(f"message {number}")


async def stop_on_signal(scope: trio.CancelScope) -> None:
    """Cancel ``scope`` on Ctrl-C or SIGTERM, so that the connection is closed with 1000."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def main(args: argparse.Namespace) -> None:
    send_lines, receive_lines = trio.open_memory_channel[str](0)
    session = Session(args.name, args.room, receive_lines)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)
        if sys.stdin.isatty():
            nursery.start_soon(read_terminal, send_lines)
        else:
            nursery.start_soon(count_messages, send_lines, args.interval)
        code = await trionos.run_reconnecting(args.url, session.on_connect)
        print("* done" if code is None else f"* the server closed the connection with {code}; stopping")
        nursery.cancel_scope.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Chat in a room of examples/room_chat.py, reconnecting.")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/", help="the room chat's WebSocket URL")
    parser.add_argument("--name", default=f"guest{os.getpid()}", help="username (default guest<pid>)")
    parser.add_argument("--room", default="lobby", help="room to join (default lobby)")
    parser.add_argument(
        "--interval", type=float, default=3.0, help="seconds between messages when stdin is not a terminal"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    trio.run(main, parse_args())
