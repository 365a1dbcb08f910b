"""permessage-deflate: negotiation, both directions, and a broadcast compressed once."""

from __future__ import annotations

import random
import socket as stdlib_socket
from collections.abc import AsyncIterator

import pytest
import trio
import websockets.sync.client
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

import trionos
from tests.helpers import Registered, ServeFn, echo_handler, room_handler
from trionos._deflate import MIN_COMPRESSED_SIZE, Deflater, check_compression
from trionos._frames import OP_PING, OP_TEXT, encode_frame, message_frame, split_frames
from trionos._transport import Transport
from trionos.testing import open_memory_server

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def test_deflater_compresses_each_of_several_joined_frames() -> None:
    """The fan-out joins frames into one write: each is compressed alone, short ones stay plain."""
    messages = ["first " * 50, "x", "third " * 40]
    joined = b"".join(message_frame(m) for m in messages)
    frames = split_frames(Deflater(12).compress(joined))
    assert frames is not None and [first for first, _, _ in frames] == [0xC1, 0x81, 0xC1]
    decoded = []
    for first, _, payload in frames:
        frame = Frame(Opcode.TEXT, bytes(payload), rsv1=bool(first & 0x40))
        decoded.append(bytes(PerMessageDeflate(True, True, 12, 15).decode(frame).data).decode())
    assert decoded == messages


async def deflate_handshake(port: int) -> tuple[trio.SocketStream, bytes]:
    """A raw client that offers permessage-deflate; the stream and the response head."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(UPGRADE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    return stream, head


def test_the_option_is_checked() -> None:
    """Only None and "deflate" are accepted."""
    check_compression(None)
    check_compression("deflate")
    with pytest.raises(ValueError, match="compression must be None or 'deflate', got 'gzip'"):
        check_compression("gzip")


def test_deflater_compresses_data_frames_once_and_leaves_the_rest() -> None:
    """Long data frames are compressed (RSV1 set) and cached; control and short frames pass unchanged."""
    deflater = Deflater(12)
    frame = message_frame("hello " * 100)
    compressed = deflater.compress(frame)
    assert compressed[0] == 0xC1 and len(compressed) < len(frame)  # FIN, RSV1, text
    assert deflater.compress(frame) is compressed
    decoder = PerMessageDeflate(True, True, 12, 15)
    payload = compressed[4:] if compressed[1] == 126 else compressed[2:]
    assert decoder.decode(Frame(Opcode.TEXT, payload, rsv1=True)).data == b"hello " * 100
    short = message_frame("x" * (MIN_COMPRESSED_SIZE - 1))
    assert deflater.compress(short) is short
    ping = encode_frame(OP_PING, b"")
    assert deflater.compress(ping) is ping


async def test_server_offers_no_context_takeover_both_ways(start_server: ServeFn) -> None:
    """A deflate server answers an offer with no context takeover on either side."""
    server = await start_server(echo_handler, compression="deflate")
    stream, head = await deflate_handshake(server.port)
    await stream.aclose()
    assert b"permessage-deflate" in head.lower()
    assert b"server_no_context_takeover" in head and b"client_no_context_takeover" in head


async def test_no_compression_by_default(start_server: ServeFn) -> None:
    """Without compression= the server negotiates nothing, whatever the client offers."""
    server = await start_server(echo_handler)
    stream, head = await deflate_handshake(server.port)
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" not in head.lower()


@pytest.mark.parametrize("client_compression", [None, "deflate"])
async def test_messages_round_trip_compressed(start_server: ServeFn, client_compression: str | None) -> None:
    """Small, large, text and binary messages echo unchanged, compressed or not."""
    server = await start_server(echo_handler, compression="deflate")
    async with trionos.connect(server.url, compression=client_compression) as ws:
        messages: list[str | bytes] = ["hi", "x" * 100_000, b"\x00\x01" * 5000, "é" * 300]
        for message in messages:
            await ws.send(message)
            reply = await ws.recv()
            assert reply == ("Echo: " + message if isinstance(message, str) else message)


async def test_compressed_messages_are_smaller_on_the_wire(start_server: ServeFn) -> None:
    """The server's reply to a compressing client takes far fewer bytes than the message."""
    server = await start_server(echo_handler, compression="deflate")
    stream, _ = await deflate_handshake(server.port)
    async with stream:
        await stream.send_all(encode_frame(OP_TEXT, b"a" * 10_000, masked=True))  # uncompressed in
        with trio.fail_after(10):
            received = await stream.receive_some(65536)
    assert received[0] == 0xC1  # a compressed text frame
    assert len(received) < 200


@pytest.fixture
async def hub(nursery: trio.Nursery) -> AsyncIterator[trionos.Hub]:
    yield await nursery.start(trionos.Hub().run)


async def test_broadcast_is_compressed_once_for_mixed_recipients(
    hub: trionos.Hub, start_server: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room of compressing and plain clients gets one broadcast right, deflated once in all."""
    registered = Registered()
    server = await start_server(room_handler(hub, registered), compression="deflate")
    encodes = 0
    original = PerMessageDeflate.encode

    def counting_encode(self: PerMessageDeflate, frame: Frame) -> Frame:
        nonlocal encodes
        encodes += frame.opcode in (Opcode.TEXT, Opcode.BINARY)  # close frames pass through it too
        return original(self, frame)

    monkeypatch.setattr(PerMessageDeflate, "encode", counting_encode)
    message = "broadcast " * 200
    async with trio.open_nursery() as nursery:
        received: list[str | bytes] = []
        all_received = trio.Event()

        async def listener(n: int, compression: str | None) -> None:
            async with trionos.connect(f"{server.url}/c{n}", compression=compression) as ws:
                received.append(await ws.recv())
                if len(received) == 6:
                    all_received.set()

        for n in range(6):
            nursery.start_soon(listener, n, "deflate" if n % 2 else None)
        await registered.wait_for(count=6)
        async with trionos.connect(f"{server.url}/sender") as sender:
            await registered.wait_for("/sender")
            await sender.send(message)
            with trio.fail_after(10):
                await all_received.wait()
    assert received == [message] * 6
    assert encodes == 1


async def test_a_burst_of_broadcasts_reaches_compressed_recipients_intact(
    hub: trionos.Hub, start_server: ServeFn
) -> None:
    """Many broadcasts in a row (joined into batches by the fan-out) decompress to the right messages."""
    registered = Registered()
    server = await start_server(room_handler(hub, registered), compression="deflate")
    messages = [f"{i:03d} " + "payload " * (i % 7 * 20) for i in range(200)]
    results: dict[int, list[str | bytes]] = {}

    async def listener(n: int, compression: str | None) -> None:
        async with trionos.connect(f"{server.url}/c{n}", compression=compression) as ws:
            results[n] = [await ws.recv() for _ in messages]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:  # ends once every listener has all of them
            for n in range(4):
                nursery.start_soon(listener, n, "deflate" if n % 2 else None)
            await registered.wait_for(count=4)
            async with trionos.connect(f"{server.url}/sender") as sender:
                await registered.wait_for("/sender")
                for message in messages:
                    await sender.send(message)
    assert len(results) == 4
    assert all(received == messages for received in results.values())


async def test_memory_backend_negotiates_compression_too() -> None:
    """The test kit's in-memory connections take compression= like connect()."""
    async with open_memory_server(echo_handler, compression="deflate") as server:
        async with server.connect("/", compression="deflate") as ws:
            await ws.send("z" * 5000)
            assert await ws.recv() == "Echo: " + "z" * 5000


async def test_context_takeover_is_negotiated_when_asked_for(start_server: ServeFn) -> None:
    """With compression_context_takeover the answer keeps the context on both sides, 4 KiB windows."""
    server = await start_server(echo_handler, compression="deflate", compression_context_takeover=True)
    stream, head = await deflate_handshake(server.port)
    await stream.aclose()
    assert b"permessage-deflate" in head.lower()
    assert b"no_context_takeover" not in head
    assert b"server_max_window_bits=12" in head


def similar_messages(count: int) -> list[str]:
    return [
        f'{{"type":"chat","room":"lobby","seq":{n},"text":"message number {n} " }}' * 3 for n in range(count)
    ]


@pytest.mark.parametrize("context_takeover", [False, True])
async def test_context_takeover_round_trips_with_websockets_own_client(
    start_server: ServeFn, context_takeover: bool
) -> None:
    """websockets' client (its own deflate) exchanges a stream of similar messages with either server."""
    server = await start_server(
        echo_handler, compression="deflate", compression_context_takeover=context_takeover
    )
    messages = similar_messages(50)

    def talk() -> tuple[list[str | bytes], bool]:
        with websockets.sync.client.connect(server.url, compression="deflate") as ws:
            replies = []
            for message in messages:
                ws.send(message)
                replies.append(ws.recv(timeout=10))
            extension = ws.protocol.extensions[0]
            assert isinstance(extension, PerMessageDeflate)
            return replies, not extension.local_no_context_takeover

    replies, kept = await trio.to_thread.run_sync(talk)
    assert replies == ["Echo: " + message for message in messages]
    assert kept is context_takeover


async def test_a_client_may_refuse_context_takeover_on_the_server_side(start_server: ServeFn) -> None:
    """A client that asks for server_no_context_takeover gets it, and its messages still decompress."""
    server = await start_server(echo_handler, compression="deflate", compression_context_takeover=True)
    messages = similar_messages(20)

    def talk() -> list[str | bytes]:
        offer = ClientPerMessageDeflateFactory(server_no_context_takeover=True)
        with websockets.sync.client.connect(server.url, extensions=[offer], compression=None) as ws:
            replies = []
            for message in messages:
                ws.send(message)
                replies.append(ws.recv(timeout=10))
            return replies

    assert await trio.to_thread.run_sync(talk) == ["Echo: " + message for message in messages]


def test_a_context_takeover_deflater_compresses_better_and_keeps_no_copy() -> None:
    """Similar messages shrink further with context takeover; each call compresses anew."""
    frames = [message_frame(message) for message in similar_messages(20)]
    each_alone = Deflater(12)
    kept = Deflater(12, context_takeover=True)
    alone_sizes = [len(each_alone.compress(frame)) for frame in frames]
    kept_results = [kept.compress(frame) for frame in frames]
    assert sum(map(len, kept_results)) < sum(alone_sizes) * 0.7
    decoder = PerMessageDeflate(False, True, 12, 15)
    for result, frame in zip(kept_results, frames, strict=True):
        payload = result[4:] if result[1] == 126 else result[2:]
        original = frame[4:] if frame[1] == 126 else frame[2:]
        assert decoder.decode(Frame(Opcode.TEXT, payload, rsv1=True)).data == original
    assert kept.compress(frames[0]) != kept_results[0]  # the context moved on: never a cached copy


async def test_context_takeover_survives_a_full_socket_and_dropped_frames(nursery: trio.Nursery) -> None:
    """Frames behind a full socket are compressed on their way out: drops keep the stream decodable."""
    left, right = trio.socket.socketpair()
    left.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    transport = Transport(trio.SocketStream(left), nursery=nursery, max_outbox_bytes=20_000)
    transport.deflater = Deflater(12, context_takeover=True)
    peer = trio.SocketStream(right)
    # Each message repeats a part of the one before it: compressed with context takeover, it
    # refers back into that one, so a compressed frame that never went out would garble the rest.
    shared = random.Random(0).randbytes(2000)
    sent = [f"{n:05d} ".encode() + random.Random(n).randbytes(500) + shared for n in range(300)]
    core = ClientProtocol(parse_uri("ws://peer/"), state=OPEN)
    core.extensions = [PerMessageDeflate(False, True, 12, 15)]
    received: list[bytes] = []
    dropped = 0
    with trio.fail_after(10):
        for index, payload in enumerate(sent):
            dropped += transport.write_dropping_oldest(message_frame(payload))
            if index % 50 == 49:
                # Let the outbox writer send some of the backlog, and read a little of it.
                await trio.lowlevel.checkpoint()
                core.receive_data(await peer.receive_some(8192))
        while core.state is OPEN and (not received or received[-1] != sent[-1]):
            core.receive_data(await peer.receive_some(1 << 16))
            for event in core.events_received():
                assert isinstance(event, Frame)
                received.append(bytes(event.data))
    assert dropped > 0
    assert core.state is OPEN  # no decompression error
    assert len(received) == len(sent) - dropped
    assert all(message in sent for message in received)
    await trio.aclose_forcefully(transport)
    await trio.aclose_forcefully(peer)
