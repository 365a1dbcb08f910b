"""The connection's inline paths: recv reading in the caller's task, send writing without a coroutine."""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from websockets.protocol import OPEN

import trionos
from trionos._connection import ProtocolLog, ServerCore, WebSocket
from trionos._frames import OP_TEXT, encode_frame
from trionos._transport import NOT_WRITTEN, TAIL_QUEUED, WRITTEN, Transport


class EmptyWakeups(Transport):
    """A transport whose first ``spurious`` reads find nothing, as after a wakeup with no data."""

    __slots__ = ("spurious",)

    def __init__(self, stream: trio.SocketStream, *, nursery: trio.Nursery, spurious: int) -> None:
        super().__init__(stream, nursery=nursery)
        self.spurious = spurious

    def read_nowait(self, max_bytes: int | None = None) -> bytes | None:
        if self.spurious:
            self.spurious -= 1
            return None
        return super().read_nowait(max_bytes)


Pair = tuple[WebSocket, trio.SocketStream]


def websocket(transport: Transport, nursery: trio.Nursery) -> WebSocket:
    """A server-side WebSocket over *transport*, open, as ``Request.accept`` makes it."""
    protocol = ServerCore(max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
    return WebSocket(
        protocol,
        transport,
        nursery=nursery,
        is_client=False,
        path="/",
        remote=None,
        request_head=None,
        close_timeout=1.0,
        max_message_size=1 << 20,
    )


@pytest.fixture
async def pair(nursery: trio.Nursery) -> AsyncIterator[Pair]:
    """A server WebSocket over one end of a socket pair, and the raw peer at the other end."""
    left, right = trio.socket.socketpair()
    transport = Transport(trio.SocketStream(left), nursery=nursery)
    peer = trio.SocketStream(right)
    yield websocket(transport, nursery), peer
    await trio.aclose_forcefully(transport)
    await trio.aclose_forcefully(peer)


def masked(text: str) -> bytes:
    """A text frame as a client sends it."""
    return encode_frame(OP_TEXT, text.encode(), masked=True)


async def test_a_wakeup_with_nothing_to_read_waits_again(nursery: trio.Nursery) -> None:
    """recv's inline read goes back to waiting when the socket had nothing after all."""
    left, right = trio.socket.socketpair()
    transport = EmptyWakeups(trio.SocketStream(left), nursery=nursery, spurious=0)
    ws = websocket(transport, nursery)
    peer = trio.SocketStream(right)
    await peer.send_all(masked("first"))
    assert await ws.recv() == "first"  # the socket is drained now: the next recv waits inline
    transport.spurious = 1
    await peer.send_all(masked("second"))
    assert await ws.recv() == "second"
    assert transport.spurious == 0


async def test_messages_of_one_read_come_out_in_order_each_a_checkpoint(pair: Pair) -> None:
    """Several messages in one read: the first returns from the read, the others are checkpoints too."""
    ws, peer = pair
    await peer.send_all(masked("one") + masked("two") + masked("three"))
    assert await ws.recv() == "one"
    with trio.testing.assert_checkpoints():
        assert await ws.recv() == "two"
    with trio.CancelScope() as cancelled:
        cancelled.cancel()
        await ws.recv()
    assert cancelled.cancelled_caught
    assert await ws.recv() == "three"  # the cancelled recv took nothing


async def test_a_recv_cancelled_while_waiting_inline_loses_nothing(pair: Pair) -> None:
    """Cancelled in the inline wait, recv leaves the socket to the next one."""
    ws, peer = pair
    await peer.send_all(masked("drain"))
    assert await ws.recv() == "drain"
    with trio.CancelScope() as waiting:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.recv)
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()
    assert waiting.cancelled_caught
    await peer.send_all(masked("kept"))
    assert await ws.recv() == "kept"


async def test_the_end_of_the_stream_during_the_inline_wait_ends_recv(pair: Pair) -> None:
    """The peer going away while recv waits inline ends it with 1006."""
    ws, peer = pair
    await peer.send_all(masked("last"))
    assert await ws.recv() == "last"
    await peer.aclose()
    with pytest.raises(trionos.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.code == 1006


async def test_try_write_says_whether_the_whole_frame_went_out(nursery: trio.Nursery) -> None:
    """WRITTEN when the socket took it all, TAIL_QUEUED when the rest waits, NOT_WRITTEN behind it."""
    left, right = trio.socket.socketpair()
    left.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    transport = Transport(trio.SocketStream(left), nursery=nursery)
    peer = trio.SocketStream(right)
    small, large = b"s" * 10, b"L" * (1 << 20)
    assert transport.try_write(small) == WRITTEN
    assert transport.try_write(large) == TAIL_QUEUED
    assert transport.outbox_bytes > 0
    assert transport.try_write(small) == NOT_WRITTEN  # the backlog goes first
    received = b""
    while len(received) < len(small) + len(large):
        received += await peer.receive_some()
    assert received == small + large
    await trio.aclose_forcefully(transport)
    await trio.aclose_forcefully(peer)


async def test_send_waits_for_a_tail_the_socket_did_not_take(nursery: trio.Nursery) -> None:
    """A message larger than the socket buffer: send returns once all of it is on its way."""
    left, right = trio.socket.socketpair()
    left.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
    transport = Transport(trio.SocketStream(left), nursery=nursery)
    ws = websocket(transport, nursery)
    peer = trio.SocketStream(right)
    message = "m" * (1 << 20)
    sent = trio.Event()

    async def send() -> None:
        await ws.send(message)
        sent.set()

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert not sent.is_set()  # waiting for the peer to read
    expected = encode_frame(OP_TEXT, message.encode())
    received = b""
    while len(received) < len(expected):
        received += await peer.receive_some()
    assert received == expected
    await trio.testing.wait_all_tasks_blocked()
    assert sent.is_set()
    assert transport.outbox_bytes == 0
    await trio.aclose_forcefully(transport)
    await trio.aclose_forcefully(peer)
