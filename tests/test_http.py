"""The request-head reader (pure, no sockets)."""

from __future__ import annotations

import pytest

from trionos._http import Headers, HttpError, RequestReader, render_error

UPGRADE = (
    b"GET /chat/room%201?token=abc&x=1&x=2 HTTP/1.1\r\nHost: example\r\nUpgrade: WebSocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nOrigin: http://example\r\n\r\n"
)


def test_upgrade_request_is_recognised_in_pieces() -> None:
    """A head fed byte by byte is parsed once complete, with path, query and headers."""
    reader = RequestReader()
    heads = [reader.feed(UPGRADE[i : i + 1]) for i in range(len(UPGRADE))]
    head = heads[-1]
    assert all(h is None for h in heads[:-1])
    assert head is not None
    assert head.is_upgrade
    assert head.path == "/chat/room 1"
    assert head.query == {"token": "abc", "x": "2"}
    assert head.headers["ORIGIN"] == "http://example"
    assert reader.received == UPGRADE


def test_plain_get_is_not_an_upgrade_and_gets_a_response() -> None:
    """A plain GET is answered with the status, type, length and Connection: close."""
    reader = RequestReader()
    head = reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head is not None and not head.is_upgrade
    response = reader.response(200, b"hello", content_type="text/plain")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5" in response.lower()
    assert b"connection: close" in response.lower()
    assert response.endswith(b"\r\n\r\nhello")


def test_head_request_gets_no_body() -> None:
    """HEAD is answered with headers only."""
    reader = RequestReader()
    reader.feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.response(200, b"hello", content_type="text/plain").endswith(b"\r\n\r\n")


def test_oversized_head_is_431() -> None:
    """A head beyond max_head_size raises HttpError(431)."""
    reader = RequestReader(max_head_size=1024)
    with pytest.raises(HttpError) as info:
        reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    assert info.value.status == 431


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x00garbage\r\n\r\n", b"HELLO\r\n\r\n"])
def test_garbage_is_400(garbage: bytes) -> None:
    """Bytes that are not HTTP raise HttpError(400)."""
    with pytest.raises(HttpError) as info:
        RequestReader().feed(garbage)
    assert info.value.status == 400


def test_eof_before_head_is_an_error() -> None:
    """A peer that closes mid-head is a bad request."""
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(HttpError):
        reader.feed(b"")


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    """Header lookups ignore case; repeated headers join with a comma and stay listed apart."""
    headers = Headers([("X-A", "1"), ("x-a", "2"), ("Host", "h")])
    assert headers["x-A"] == "1, 2"
    assert headers.get_all("X-A") == ["1", "2"]
    assert "HOST" in headers and len(headers) == 2


def test_render_error() -> None:
    """Error responses made before any request carry status, reason and body."""
    data = render_error(503, "too many connections")
    assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert data.endswith(b"too many connections\n")


def test_head_keeps_headers_as_one_block_and_parses_them_on_access() -> None:
    """Repeated headers, colons in values and folded Connection tokens survive the compact block."""
    reader = RequestReader()
    head = reader.feed(
        b"GET /ws HTTP/1.1\r\nHost: example:8080\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
        b"Connection: Upgrade\r\nCookie: a=1\r\nCookie: b=2\r\nX-Empty:\r\n\r\n"
    )
    assert head is not None
    assert head.is_upgrade  # the "upgrade" token is in the second Connection header
    headers = head.headers
    assert headers["host"] == "example:8080"
    assert headers.get_all("cookie") == ["a=1", "b=2"]
    assert headers["x-empty"] == ""
    assert list(headers) == ["host", "upgrade", "connection", "cookie", "x-empty"]
    assert head.headers == headers  # parsed anew, equal every time


def test_post_is_never_an_upgrade() -> None:
    """Only GET may upgrade (RFC 6455 section 4.1)."""
    reader = RequestReader()
    head = reader.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert head is not None and not head.is_upgrade
