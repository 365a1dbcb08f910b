"""Plain HTTP for tests: one GET over any byte stream, the response parsed with h11."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import h11
import trio

from .._http import Headers
from .._json import loads as loads_json

__all__ = ["HttpResponse", "http_request"]

#: The largest response body a test reads; a larger one fails the request instead of growing without end.
MAX_BODY_BYTES = 16 * 1024 * 1024


@attrs.frozen
class HttpResponse:
    """A complete HTTP response: status, headers (case-insensitive) and body."""

    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (the package's policy: NaN and Infinity are refused).

        Raises:
            DecodeError: the body is not JSON.
        """
        return loads_json(self.body)


async def http_request(
    stream: trio.abc.Stream,
    host: str,
    path: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> HttpResponse:
    """Send one request on *stream*, read the whole response, and close the stream.

    Cancellation closes the stream.

    Args:
        stream: a byte stream to the server.
        host: the ``Host`` header.
        path: the request target.
        method: the HTTP method.
        headers: more request headers.
        body: the request body (with a ``Content-Length``).

    Returns:
        The complete response.

    Raises:
        AssertionError: the server closed without a complete response, sent an invalid one, or
            sent a body over 16 MiB.
    """
    conn = h11.Connection(h11.CLIENT)
    request_headers = [("Host", host), ("Connection", "close"), *headers]
    if body:
        request_headers.append(("Content-Length", str(len(body))))
    status: int | None = None
    response_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    size = 0
    try:
        data = conn.send(h11.Request(method=method, target=path, headers=request_headers))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(64 * 1024)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    raise AssertionError(f"{method} {path}: the response body exceeds {MAX_BODY_BYTES} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"{method} {path}: the server closed the connection without a response")
    except h11.RemoteProtocolError as exc:
        raise AssertionError(f"{method} {path}: the server sent an invalid HTTP response: {exc}") from exc
    finally:
        await trio.aclose_forcefully(stream)
    assert status is not None
    return HttpResponse(status, Headers(response_headers), b"".join(chunks))
