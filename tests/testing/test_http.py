"""http_request: one plain HTTP request over any byte stream, the response parsed with h11."""

from __future__ import annotations

import h11
import pytest
import trio

from trionos.testing import memory_pipe
from trionos.testing._http import http_request


async def serve_once(stream: trio.abc.Stream, response: bytes, seen: list[h11.Event]) -> None:
    """Read one request with h11 (its events go to *seen*), answer with the raw *response*, close."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some()))
            continue
        assert event is not h11.PAUSED  # one request per connection: h11 never pauses here
        assert isinstance(event, h11.Event)
        seen.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    await stream.send_all(response)
    await stream.aclose()


async def test_a_request_and_its_complete_response() -> None:
    """Method, host, headers and body go out; status, case-insensitive headers, text and JSON come back."""
    client, server = memory_pipe()
    seen: list[h11.Event] = []
    response = b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a": 1}'
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, server, response, seen)
        got = await http_request(
            client, "example:80", "/things", method="POST", headers=[("X-Test", "yes")], body=b"hello"
        )
    assert (got.status, got.headers["content-type"], got.text, got.json()) == (
        201,
        "application/json",
        '{"a": 1}',
        {"a": 1},
    )
    request, data = seen[0], seen[1]
    assert isinstance(request, h11.Request) and isinstance(data, h11.Data)
    assert (request.method, request.target, data.data) == (b"POST", b"/things", b"hello")
    assert {(b"host", b"example:80"), (b"x-test", b"yes"), (b"connection", b"close")} <= set(request.headers)


async def test_a_server_that_closes_without_a_response_fails_the_request() -> None:
    """An end of stream before any response is an AssertionError naming the request.

    (h11 reports it as a protocol error, so the message says "invalid HTTP response".)
    """
    client, server = memory_pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, server, b"", [])
        with pytest.raises(AssertionError, match=r"GET /: the server .*ConnectionClosed"):
            await http_request(client, "x", "/")


async def test_an_invalid_response_fails_the_request() -> None:
    """Bytes that are not HTTP are an AssertionError that says so."""
    client, server = memory_pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, server, b"SSH-2.0-OpenSSH\r\n\r\n", [])
        with pytest.raises(AssertionError, match="GET /: the server sent an invalid HTTP response"):
            await http_request(client, "x", "/")
