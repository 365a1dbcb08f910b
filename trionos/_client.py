"""``connect()``: a WebSocket client for ``ws://`` and ``wss://`` URLs."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Unpack, cast
from urllib.parse import urlsplit

import trio
from websockets.http11 import Response
from websockets.typing import LoggerLike, Subprotocol
from websockets.uri import parse_uri

from ._connection import ClientCore, ProtocolLog, WebSocket
from ._deflate import client_extensions
from ._errors import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectTimeout,
    HandshakeError,
    single_leaf,
)
from ._heartbeat import run_keeper
from ._options import ClientOptionKeywords, ClientOptions, resolve
from ._transport import Transport

__all__ = ["ClientOptions", "connect", "connect_over", "parse_ws_url"]

logger = logging.getLogger("trionos.client")

# websockets' cores take a logger; ProtocolLog has the logger methods they call.
_PROTOCOL_LOG = cast("LoggerLike", ProtocolLog())

_DEFAULTS = ClientOptions()


def parse_ws_url(url: str) -> tuple[bool, str, int, str]:
    """Split a ``ws://`` or ``wss://`` URL into its parts.

    Args:
        url: the URL.

    Returns:
        ``(secure, host, port, resource)``: whether it is ``wss://``, the host name, the port
        (80 or 443 unless given) and the request target (path and query).

    Raises:
        ValueError: *url* is not a ``ws://`` or ``wss://`` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL {url!r} has no host")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return secure, parts.hostname, port, resource


async def _open_stream(
    host: str, port: int, secure: bool, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise HandshakeError(f"could not connect to {host}:{port}: {exc}") from exc
    if not secure:
        return tcp
    tls = trio.SSLStream(tcp, ssl_context or ssl.create_default_context(), server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        raise HandshakeError(f"TLS handshake with {host}:{port} failed: {exc.__cause__ or exc}") from exc
    return tls


@asynccontextmanager
async def connect(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    options: ClientOptions | None = None,
    **keywords: Unpack[ClientOptionKeywords],
) -> AsyncIterator[WebSocket]:
    """Open a WebSocket connection; close it (1000) when the block exits.

    ``async with trionos.connect("ws://127.0.0.1:8080/") as ws: ...``

    With a heartbeat (the default pings every 30 s), a server that sends nothing for
    ``heartbeat.timeout`` seconds is declared dead: the block is cancelled, the TCP connection
    closed, and ``ConnectionClosed(1011, "heartbeat timeout ...")`` raised from the ``async with``.
    Exceptions from the block propagate unchanged. ``recv`` reads and parses in the caller's own
    task. Cancelling the block closes the connection with 1000 without waiting for the reply.

    Args:
        url: a ``ws://`` or ``wss://`` URL.
        ssl_context: the TLS settings for ``wss://`` (default: the system's trust store).
        options: the connection's settings (see :class:`~trionos.ClientOptions`).
        **keywords: the same settings as keyword arguments, e.g. ``connect_timeout=3``, instead
            of ``options``.

    Returns:
        An async context manager yielding the open :class:`~trionos.WebSocket`.

    Raises:
        ConnectTimeout: TCP, TLS and the upgrade together took longer than ``connect_timeout``.
        ConnectionRejected: the server answered the upgrade with an HTTP status.
        HandshakeError: any other failure to connect.
        ConnectionClosed: the server stopped answering heartbeats (code 1011).
        TypeError: both ``options`` and option keywords were given, or an unknown keyword.
        ValueError: *url* is not a ``ws://`` or ``wss://`` URL, or an option is out of range.
    """
    secure, host, port, resource = parse_ws_url(url)
    default_port = 443 if secure else 80
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    settings = resolve(options, keywords, base=_DEFAULTS, caller="connect")

    async def open_stream() -> trio.abc.Stream:
        return await _open_stream(host, port, secure, ssl_context)

    async with connect_over(open_stream, host_header, resource, settings, remote=(host, port)) as ws:
        yield ws


async def _handshake(
    transport: Transport, protocol: ClientCore, options: ClientOptions, description: str
) -> bytes:
    """Send the upgrade request and read the response; return the bytes that came behind it.

    The core parses those bytes as frames at once; the fast path is told about them.
    """
    request = protocol.connect()
    for name, value in options.extra_headers:
        request.headers[name] = value
    protocol.send_request(request)
    for request_bytes in protocol.data_to_send():
        await transport.write(request_bytes)
    received = b""  # the response head so far, bounded by the core's limits on a head
    while True:
        try:
            data = await transport.receive_some(64 * 1024)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise HandshakeError(f"WebSocket handshake with {description} failed: {exc!r}") from exc
        if data:
            received += data
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        if events:
            response = events[0]
            assert isinstance(response, Response)
            if response.status_code != 101:
                raise ConnectionRejected(
                    response.status_code, bytes(response.body or b""), tuple(response.headers.raw_items())
                )
            if protocol.handshake_exc is not None:
                raise HandshakeError(
                    f"WebSocket handshake with {description} failed: {protocol.handshake_exc}"
                ) from protocol.handshake_exc
            # Behind the head (a 101 has no body) come only frames: the core parsed them already.
            return received[received.index(b"\r\n\r\n") + 4 :]
        if protocol.handshake_exc is not None or not data:
            cause = protocol.handshake_exc
            detail = "the server closed the connection" if cause is None else f"{cause}: {cause.__cause__!r}"
            raise HandshakeError(f"WebSocket handshake with {description} failed: {detail}") from cause


@asynccontextmanager
async def connect_over(
    open_stream: Callable[[], Awaitable[trio.abc.Stream]],
    host_header: str,
    resource: str,
    options: ClientOptions,
    *,
    remote: tuple[str, int] | None,
) -> AsyncIterator[WebSocket]:
    """The client side of :func:`connect` over any stream ``open_stream()`` returns.

    Args:
        open_stream: opens the byte stream (within ``options.connect_timeout``).
        host_header: the ``Host`` header.
        resource: the request target.
        options: the connection's settings.
        remote: the peer's address, for the WebSocket's ``remote``.

    Returns:
        An async context manager yielding the open WebSocket, as :func:`connect` does.

    Raises:
        ConnectTimeout: opening and the handshake took longer than ``options.connect_timeout``.
        ConnectionRejected: the server answered with an HTTP status.
        HandshakeError: any other failure to connect.
        ConnectionClosed: the server stopped answering heartbeats (code 1011).
    """
    heartbeat = options.heartbeat
    idle_scope = trio.CancelScope(deadline=math.inf)
    description = f"ws://{host_header}{resource}"
    try:
        async with trio.open_nursery() as nursery:
            transport: Transport | None = None
            try:
                with trio.move_on_after(options.connect_timeout) as timeout:
                    stream = await open_stream()
                    transport = Transport(stream, nursery=nursery, max_outbox_bytes=options.max_outbox_bytes)
                    protocol = ClientCore(
                        parse_uri(description),
                        extensions=client_extensions(options.compression),
                        subprotocols=[Subprotocol(name) for name in options.subprotocols] or None,
                        max_size=options.max_message_size,
                        logger=_PROTOCOL_LOG,
                    )
                    behind = await _handshake(transport, protocol, options, description)
            except BaseException:
                if transport is not None:
                    await trio.aclose_forcefully(transport)
                raise
            if timeout.cancelled_caught:
                if transport is not None:
                    await trio.aclose_forcefully(transport)
                raise ConnectTimeout(
                    f"could not connect to {description} within {options.connect_timeout:g} s"
                )
            assert transport is not None
            ws = WebSocket(
                protocol,
                transport,
                nursery=nursery,
                is_client=True,
                path=resource,
                remote=remote,
                request_head=None,
                close_timeout=options.close_timeout,
                max_message_size=options.max_message_size,
                max_queue=options.message_queue_size,
            )
            protocol.parsed_behind_handshake(behind)
            if behind:
                # Frames that came right behind the 101 (a server may close at once): the core has
                # parsed them already.
                ws._flush_protocol()
            if heartbeat is not None:
                ws._watch_idle(idle_scope, heartbeat.timeout)
            nursery.start_soon(run_keeper, heartbeat, lambda: (ws,))
            try:
                with idle_scope:
                    yield ws
            except trio.Cancelled:
                # Going away: say goodbye without waiting for the reply.
                with trio.CancelScope(shield=True):
                    await ws.close_without_reply(1000)
                raise
            finally:
                with trio.CancelScope(shield=True):
                    if idle_scope.cancelled_caught:
                        ws.abort(1011, "heartbeat timeout")
                    await ws.close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our background tasks do not fail, so a group holds the block's exception: give it to
        # the caller unwrapped.
        single = single_leaf(group)
        if single is None:
            raise
        raise single from single.__cause__
    if idle_scope.cancelled_caught:
        assert heartbeat is not None
        raise ConnectionClosed(1011, f"heartbeat timeout: no traffic for {heartbeat.timeout:g} s")
