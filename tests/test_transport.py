"""The Transport's own socket paths: direct reads with trio's checkpoint rules, ordered writes."""

from __future__ import annotations

import socket as stdlib_socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trionos._frames import message_frame
from trionos._transport import Transport, write_each

Pair = tuple[Transport, trio.SocketStream]


@pytest.fixture
async def pair(nursery: trio.Nursery) -> AsyncIterator[Pair]:
    """A Transport over one end of a connected socket pair, and the raw other end."""
    left, right = trio.socket.socketpair()
    transport = Transport(trio.SocketStream(left), nursery=nursery)
    peer = trio.SocketStream(right)
    yield transport, peer
    await trio.aclose_forcefully(transport)
    await trio.aclose_forcefully(peer)


async def test_reads_what_the_peer_sent_in_order(pair: Pair) -> None:
    """Bytes arrive in order, at most ``max_bytes`` at a time."""
    transport, peer = pair
    await peer.send_all(b"hello world")
    assert await transport.receive_some(5) == b"hello"
    assert await transport.receive_some() == b" world"


async def test_a_read_with_data_waiting_is_still_a_checkpoint(pair: Pair) -> None:
    """Like trio's own streams, a read that need not wait still yields to the scheduler."""
    transport, peer = pair
    await peer.send_all(b"x")
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_checkpoints():
        assert await transport.receive_some() == b"x"


async def test_cancelled_reads_lose_nothing(pair: Pair) -> None:
    """A read cancelled while waiting takes no bytes; a read cancelled beforehand takes none either."""
    transport, peer = pair
    with trio.CancelScope() as waiting:
        waiting.cancel()
        await transport.receive_some()
    assert waiting.cancelled_caught
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    await peer.send_all(b"kept")
    assert await transport.receive_some() == b"kept"


async def test_end_of_stream_and_reset(nursery: trio.Nursery) -> None:
    """A clean close reads as b''; a reset raises BrokenResourceError; a closed transport refuses."""
    left, right = trio.socket.socketpair()
    transport = Transport(trio.SocketStream(left), nursery=nursery)
    await trio.SocketStream(right).aclose()
    assert await transport.receive_some() == b""
    await transport.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive_some()

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = await trio.open_tcp_stream(*listener.getsockname())
    accepted, _ = await listener.accept()
    listener.close()
    server_side = Transport(trio.SocketStream(accepted), nursery=nursery)
    # SO_LINGER with a zero timeout turns close() into a reset.
    client.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await server_side.receive_some()
    await server_side.aclose()


async def test_concurrent_large_writes_do_not_interleave(pair: Pair) -> None:
    """Writers that must wait for a full socket go one after the other, each frame whole."""
    transport, peer = pair
    first, second = b"a" * (4 << 20), b"b" * (4 << 20)
    received = bytearray()

    async def read_everything() -> None:
        while len(received) < len(first) + len(second):
            received.extend(await peer.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.write, first)
        nursery.start_soon(transport.write, second)
        nursery.start_soon(read_everything)
    runs = bytes(received).replace(b"a" * 1024, b"A").replace(b"b" * 1024, b"B")
    assert runs in (b"A" * 4096 + b"B" * 4096, b"B" * 4096 + b"A" * 4096)


def parse_frames(stream: bytes) -> list[bytes]:
    """Split unmasked server frames; fails on a stream that is not whole frames."""
    frames = []
    while stream:
        size, offset = stream[1] & 0x7F, 2
        if size == 126:
            size, offset = int.from_bytes(stream[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(stream[2:10], "big"), 10
        assert len(stream) >= offset + size, "the stream ends inside a frame"
        frames.append(stream[offset : offset + size])
        stream = stream[offset + size :]
    return frames


async def test_drop_oldest_never_drops_the_end_of_a_frame_on_the_wire(pair: Pair) -> None:
    """When the socket took only part of a frame, its end is kept whatever else is dropped."""
    transport, peer = pair
    transport.max_outbox_bytes = 4096
    payloads = [bytes([i]) * 100_000 for i in range(8)]
    for payload in payloads:
        transport.write_dropping_oldest(message_frame(payload))
    assert transport.dropped_frames > 0
    received = bytearray()
    expected_end = message_frame(payloads[-1])

    async def read_until_last() -> None:
        while not received.endswith(expected_end):
            received.extend(await peer.receive_some(1 << 20))

    with trio.fail_after(5):
        await read_until_last()
    frames = parse_frames(bytes(received))
    assert frames[0] == payloads[0]  # partly written before the drops: finished
    assert frames[-1] == payloads[-1]
    assert len(frames) == len(payloads) - transport.dropped_frames


async def test_try_write_goes_straight_into_the_socket(pair: Pair) -> None:
    """With no backlog ``try_write`` writes the whole frame at once, without awaiting."""
    transport, peer = pair
    frame = message_frame("hello")
    assert transport.try_write(frame)
    assert transport.outbox_bytes == 0
    assert await peer.receive_some() == frame


async def test_try_write_queues_the_tail_of_a_frame_the_socket_cannot_take(pair: Pair) -> None:
    """A frame larger than the socket buffer is started, its tail queued in order, and flushed."""
    transport, peer = pair
    frame = message_frame(b"x" * (4 << 20))
    assert transport.try_write(frame)
    assert 0 < transport.outbox_bytes < len(frame)
    received = bytearray()

    async def read_everything() -> None:
        while len(received) < len(frame):
            received.extend(await peer.receive_some(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_everything)
        await transport.flush()
    assert transport.outbox_bytes == 0
    assert bytes(received) == frame


async def test_try_write_does_nothing_behind_a_backlog_or_after_close(pair: Pair) -> None:
    """Behind queued bytes, or once closed, ``try_write`` leaves the frame to ``write``."""
    transport, _peer = pair
    big = message_frame(b"x" * (4 << 20))
    assert transport.try_write(big)
    backlog = transport.outbox_bytes
    assert not transport.try_write(message_frame("later"))
    assert transport.outbox_bytes == backlog
    await transport.aclose()
    assert not transport.try_write(message_frame("closed"))
    with pytest.raises(trio.ClosedResourceError):
        await transport.write(message_frame("closed"))


async def test_write_each_counts_the_bytes_it_writes(pair: Pair) -> None:
    """A broadcast written straight into the socket counts in ``bytes_out`` (the access log's ``out=``)."""
    transport, peer = pair

    class Recipient:
        def __init__(self, transport: Transport) -> None:
            self.transport = transport

    frame = message_frame("to everyone")
    assert write_each([Recipient(transport)], frame) == []
    assert transport.bytes_out == len(frame)
    assert await peer.receive_some() == frame
