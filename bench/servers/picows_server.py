"""picows (Cython) on asyncio with uvloop: echo, and broadcast by writing to every subscriber.

picows hands every frame to a callback (``on_ws_frame``) with no task and no queue, and
``WSTransport.send`` writes to the event loop's transport without waiting, so this is about
as fast as a Python-driven WebSocket server gets; the broadcast target in issue #13 is measured
against it. Every message the load generator sends is one frame, so frames are echoed or
broadcast as they come (a continuation frame is passed on as one too). picows has no
permessage-deflate: ``--compression`` is not offered.
"""

from __future__ import annotations

from _common import BACKLOG, announce, parse_args, raise_nofile_limit, run_asyncio, stop_event
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)


class _Peer(WSListener):
    """What every connection does with control frames: answer a close (picows pongs by itself)."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


class _Echo(_Peer):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)
        else:
            super().on_ws_frame(transport, frame)


class _Subscriber(_Peer):
    def __init__(self, subscribers: set[WSTransport]) -> None:
        self._subscribers = subscribers
        self._transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._subscribers.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._subscribers.discard(transport)


class _Publisher(_Peer):
    def __init__(self, subscribers: set[WSTransport]) -> None:
        self._subscribers = subscribers

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            super().on_ws_frame(transport, frame)
            return
        payload = frame.get_payload_as_bytes()
        kind = frame.msg_type
        for subscriber in self._subscribers:
            subscriber.send(kind, payload)


class _Refuse(_Peer):
    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send_close(WSCloseCode.POLICY_VIOLATION, b"unknown path")
        transport.disconnect()


async def main_async(host: str, port: int) -> None:
    subscribers: set[WSTransport] = set()

    def listener_factory(request: WSUpgradeRequest) -> WSListener:
        path = request.path.decode() if isinstance(request.path, bytes) else request.path
        if path == "/echo":
            return _Echo()
        if path in ("/subscribe", "/idle"):
            return _Subscriber(subscribers)
        if path == "/publish":
            return _Publisher(subscribers)
        return _Refuse()

    stop = stop_event()
    server = await ws_create_server(listener_factory, host, port, backlog=BACKLOG)
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await stop.wait()


def main() -> None:
    args = parse_args(__doc__)
    raise_nofile_limit()
    run_asyncio(main_async(args.host, args.port))


if __name__ == "__main__":
    main()
