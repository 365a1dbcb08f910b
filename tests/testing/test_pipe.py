"""memory_pipe: the bounded in-memory stream under the memory backend."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trionos.testing import memory_pipe


async def test_pipe_passes_trios_half_closeable_stream_checks() -> None:
    """memory_pipe streams behave as trio specifies for HalfCloseableStream, clogged or not."""

    async def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        return memory_pipe()

    async def clogged() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        a, b = memory_pipe(max_bytes=1)
        await a.send_all(b"a")  # both directions full: the next send_all waits
        await b.send_all(b"b")
        return a, b

    await trio.testing.check_half_closeable_stream(pair, clogged)


async def test_pipe_send_waits_while_the_peer_buffer_is_full() -> None:
    """send_all stops at max_bytes unread and resumes as the peer reads; the bytes arrive intact."""
    a, b = memory_pipe(max_bytes=10)
    payload = bytes(range(25))
    done = trio.Event()

    async def send() -> None:
        await a.send_all(payload)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert (a.outgoing_bytes, b.incoming_bytes, done.is_set()) == (10, 10, False)
        received = await b.receive_some(4)
        await trio.testing.wait_all_tasks_blocked()
        assert a.outgoing_bytes == 10 and not done.is_set()
        while len(received) < len(payload):
            received += await b.receive_some()
    assert done.is_set() and received == payload


async def test_pipe_close_semantics() -> None:
    """EOF after buffered data, writes to a closed peer break, a closed end refuses everything."""
    a, b = memory_pipe()
    await a.send_all(b"last words")
    await a.aclose()
    assert await b.receive_some() == b"last words"
    assert await b.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await b.send_all(b"anyone?")
    with pytest.raises(trio.ClosedResourceError):
        await a.receive_some()
    await a.aclose()  # idempotent
    with pytest.raises(ValueError, match="at least 1"):
        memory_pipe(0)
