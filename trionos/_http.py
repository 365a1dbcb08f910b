"""The first request on a connection, parsed with h11: pure, no sockets, no clock.

A :class:`RequestReader` is fed the bytes that arrive and returns a :class:`RequestHead` once the
head is complete; it renders the response for a plain HTTP request. Every byte fed is kept: an
upgrade hands the head to websockets' Sans-I/O handshake, and the bytes behind it (frames a
client sent without waiting) to the connection.
"""

from __future__ import annotations

import base64
import binascii
import http
import http.cookies
import sys
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, unquote

import attrs
import h11

__all__ = ["Headers", "HttpError", "RequestHead", "RequestReader", "parse_cookies", "render_error"]


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only HTTP headers.

    ``headers["origin"]`` and ``headers["Origin"]`` are the same; a header sent several times reads
    as its values joined by ``", "`` (RFC 9110 section 5.3), and :meth:`get_all` lists them apart.
    """

    # One flat tuple (name, value, name, value, ...) with interned names: every connection keeps
    # its handshake headers for its whole life, so they are stored as compactly as they can be.
    # Lookups scan it; a request head has a few dozen headers at most.
    __slots__ = ("_flat",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        flat: list[str] = []
        for name, value in items:
            flat += (sys.intern(name.lower()), value)
        self._flat = tuple(flat)

    def _values(self, wanted: str) -> list[str]:
        flat = self._flat
        return [flat[i + 1] for i in range(0, len(flat), 2) if flat[i] == wanted]

    def __getitem__(self, name: str) -> str:
        values = self._values(name.lower())
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._flat[::2]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(self._flat[::2]))

    def __len__(self) -> int:
        return len(set(self._flat[::2]))

    def get_all(self, name: str) -> list[str]:
        """List every value of a header.

        Args:
            name: the header's name (any case).

        Returns:
            Its values, in the order they were sent (empty if it was not sent).
        """
        return self._values(name.lower())

    def raw(self) -> tuple[tuple[str, str], ...]:
        """The headers as sent, names lower-cased."""
        flat = self._flat
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    def __repr__(self) -> str:
        return f"Headers({list(self.raw())!r})"


def parse_cookies(values: Iterable[str]) -> dict[str, str]:
    """The cookies of ``Cookie`` header values, by name (a later value of a name wins).

    A value :class:`http.cookies.SimpleCookie` cannot parse is skipped, as a browser would skip it.

    Args:
        values: the values of every ``Cookie`` header of a request.

    Returns:
        The cookie values, unquoted.
    """
    cookies: dict[str, str] = {}
    for value in values:
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(value)
        except http.cookies.CookieError:
            continue
        cookies.update((name, morsel.value) for name, morsel in jar.items())
    return cookies


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))


@attrs.frozen
class RequestHead:
    """The method, target and headers of one HTTP/1.1 request.

    The headers are kept as one ``bytes`` block (``name:value`` lines, as h11 accepted and
    normalised them) and :attr:`headers` parses it on each access: a WebSocket keeps its request
    for its whole life, and a browser's dozen headers as separate strings would cost several
    times more memory than the block.
    """

    method: str
    target: str
    header_block: bytes
    #: True for a WebSocket upgrade request (RFC 6455 section 4.2.1).
    is_upgrade: bool

    @classmethod
    def from_fields(cls, method: str, target: str, fields: Iterable[tuple[bytes, bytes]]) -> RequestHead:
        """Build a head from h11's request fields.

        Args:
            method: the HTTP method.
            target: the request target.
            fields: h11's (lower-cased name, value) header pairs.

        Returns:
            The head.
        """
        pairs = list(fields)
        block = b"\n".join(name + b":" + value for name, value in pairs)
        upgrade = ",".join(value.decode("latin-1") for name, value in pairs if name == b"upgrade")
        connection = ",".join(value.decode("latin-1") for name, value in pairs if name == b"connection")
        is_upgrade = (
            method == "GET" and _has_token(upgrade, "websocket") and _has_token(connection, "upgrade")
        )
        return cls(method, target, block, is_upgrade)

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive (parsed anew on each access)."""
        if not self.header_block:
            return Headers()
        return Headers(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, _, value in (line.partition(b":") for line in self.header_block.split(b"\n"))
        )

    def handshake_error(self) -> HttpError | None:
        """What is wrong with this upgrade request's WebSocket fields, if anything (RFC 6455 4.2.1).

        ``Sec-WebSocket-Key`` must be the base64 encoding of 16 bytes (400 otherwise), and
        ``Sec-WebSocket-Version`` must be 13 (426 otherwise).
        """
        headers = self.headers
        key = headers.get("sec-websocket-key", "")
        try:
            nonce = base64.b64decode(key.strip().encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            nonce = b""
        if len(nonce) != 16:
            return HttpError(400, f"Sec-WebSocket-Key must be base64 of 16 bytes, got {key!r}")
        version = headers.get("sec-websocket-version", "")
        if version.strip() != "13":
            return HttpError(426, f"Sec-WebSocket-Version must be 13, got {version!r}")
        return None

    @property
    def path(self) -> str:
        """The percent-decoded path, without the query string."""
        return unquote(self.target.partition("?")[0])

    @property
    def query_string(self) -> str:
        """The raw query string, without the ``?``."""
        return self.target.partition("?")[2]

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; when a name repeats, the last value wins."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))


@attrs.frozen
class HttpError(Exception):
    """The request cannot be served; ``status`` is the HTTP status to answer with."""

    status: int
    detail: str


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class RequestReader:
    """Reads one request head from bytes, then renders one response.

    Bounds: the head may be at most ``max_head_size`` bytes; beyond that :meth:`feed` raises
    :class:`HttpError` with status 431. Malformed input raises :class:`HttpError` with status 400.
    """

    def __init__(self, *, max_head_size: int = 16 * 1024) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head_size = max_head_size
        self._received = bytearray()
        self._head_size = 0
        self._method = "GET"

    @property
    def received(self) -> bytes:
        """Every byte fed so far."""
        return bytes(self._received)

    @property
    def head_bytes(self) -> bytes:
        """The bytes of the complete request head (empty before it is complete)."""
        return bytes(self._received[: self._head_size])

    @property
    def trailing(self) -> bytes:
        """What arrived after the request head (frames sent without waiting for the 101)."""
        return bytes(self._received[self._head_size :]) if self._head_size else b""

    def feed(self, data: bytes | bytearray) -> RequestHead | None:
        """Add bytes received from the client.

        Args:
            data: the bytes (``b""`` for the end of the stream).

        Returns:
            The request head once it is complete, else None.

        Raises:
            HttpError: the head is malformed (400) or larger than ``max_head_size`` (431).
        """
        self._received += data
        self._conn.receive_data(bytes(data))
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HttpError(exc.error_status_hint, str(exc)) from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request):
            # h11 bounds only a head still incomplete; one that arrived whole is checked here.
            head_size = len(self._received) - len(self._conn.trailing_data[0])
            if head_size > self._max_head_size:
                raise HttpError(431, f"request head of {head_size} bytes exceeds {self._max_head_size}")
            self._head_size = head_size
            self._method = sys.intern(event.method.decode("ascii"))
            head = RequestHead.from_fields(
                self._method, event.target.decode("latin-1"), ((name, value) for name, value in event.headers)
            )
            return head
        raise HttpError(400, "connection closed before a complete request head")

    def response(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Render the full response (head and body) with ``Connection: close``.

        Args:
            status: the HTTP status code.
            body: the body.
            content_type: the ``Content-Type`` header.
            headers: more ``(name, value)`` headers.

        Returns:
            The response's bytes.
        """
        fields = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *headers,
        ]
        data = self._conn.send(h11.Response(status_code=status, headers=fields, reason=_reason(status)))
        if self._method != "HEAD":
            data += self._conn.send(h11.Data(data=body))
        data += self._conn.send(h11.EndOfMessage())
        return data


def render_error(status: int, detail: str = "") -> bytes:
    """Render a complete plain-text error response, for use before (or instead of) a parsed request.

    Args:
        status: the HTTP status code.
        detail: the body's text (default: the status's phrase).

    Returns:
        The response's bytes, with ``Connection: close``.
    """
    body = (detail or http.HTTPStatus(status).phrase).encode("utf-8") + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, _reason(status), len(body), body)
    )
