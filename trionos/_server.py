"""``serve()``: one port for plain HTTP and WebSocket upgrades.

Each TCP connection runs the user's handler in its own task, inside one cancel scope: the
connection's idle scope, which the heartbeat moves and shutdown cancels. Its background tasks,
when it needs any (the outbox writer behind a full socket, a servicer reading for a handler that
does not), run in the server's shared support nursery (:mod:`._support`). Layers: TCP (and TLS)
-> :mod:`._http` reads the request head with h11 -> the handler answers HTTP or accepts an
upgrade, whose handshake websockets' Sans-I/O ``ServerProtocol`` completes -> a
:class:`~trionos.WebSocket` on that protocol core.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import trio
from websockets.extensions.permessage_deflate import PerMessageDeflate

from ._connection import ProtocolLog, ServerCore, WebSocket
from ._deflate import Deflater, check_compression, server_extensions
from ._errors import ConnectionClosed, HandshakeError
from ._heartbeat import Heartbeat, run_keeper
from ._http import Headers, HttpError, RequestHead, RequestReader, render_error
from ._json import dumps as dumps_json
from ._metrics import Metrics, RefusalReason
from ._support import SupportNursery, TaskSpawner
from ._transport import Transport

__all__ = ["Handler", "Request", "Server", "serve"]

logger = logging.getLogger("trionos.server")

_PROTOCOL_LOG = ProtocolLog()

Handler = Callable[["Request"], Awaitable[None]]

_RECEIVE_SIZE = 64 * 1024


def _peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:
            return None
        return str(host), int(port)
    return None


class Request:
    """The first request on a connection: answer it with HTTP, or accept the WebSocket upgrade.

    A handler that returns without answering a plain request yields 404; one that raises yields
    500 (plain HTTP) or close code 1011 (WebSocket). When the handler returns, its WebSocket is
    closed with 1000.
    """

    # The handler holds its request for the connection's whole life: slots keep it small.
    __slots__ = (
        "_handler_scope",
        "_head",
        "_nursery",
        "_reader",
        "_server",
        "_stream",
        "answered",
        "remote",
        "websocket",
    )

    def __init__(
        self,
        head: RequestHead,
        reader: RequestReader,
        stream: trio.abc.Stream,
        server: Server,
        nursery: TaskSpawner,
        handler_scope: trio.CancelScope,
    ) -> None:
        self._head = head
        self._reader: RequestReader | None = reader
        self._stream = stream
        self._server = server
        self._nursery = nursery
        self._handler_scope = handler_scope
        #: The accepted WebSocket, once :meth:`accept` has returned.
        self.websocket: WebSocket | None = None
        #: True once the request was answered (HTTP response, rejection, or accepted upgrade).
        self.answered = False
        #: The peer's ``(host, port)``, or None for in-memory connections.
        self.remote = _peer_address(stream)

    def __repr__(self) -> str:
        return f"<trionos.Request {self.method} {self._head.target!r} upgrade={self.is_upgrade}>"

    @property
    def method(self) -> str:
        """The HTTP method, e.g. ``"GET"``."""
        return self._head.method

    @property
    def path(self) -> str:
        """The percent-decoded path, without the query string."""
        return self._head.path

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (the last value wins when a name repeats)."""
        return self._head.query

    @property
    def query_string(self) -> str:
        """The raw query string."""
        return self._head.query_string

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive."""
        return self._head.headers

    @property
    def is_upgrade(self) -> bool:
        """True when the client asks for a WebSocket."""
        return self._head.is_upgrade

    def _claim(self) -> None:
        if self.answered:
            raise RuntimeError(f"{self!r} was already answered")
        self.answered = True

    async def accept(
        self,
        subprotocol: str | None = None,
        extra_headers: Iterable[tuple[str, str]] | None = None,
        *,
        answer_text_ping: bool = False,
    ) -> WebSocket:
        """Complete the WebSocket handshake and return the connection.

        ``subprotocol`` must be one the client offered (``headers["sec-websocket-protocol"]``).
        With ``answer_text_ping``, an inbound text message ``"ping"`` is answered with ``"pong"``
        and not returned by ``recv`` (the application-level heartbeat browsers can send).
        """
        if not self.is_upgrade:
            raise RuntimeError(f"accept() needs a WebSocket upgrade request, got {self!r}")
        self._claim()
        server = self._server
        reader = self._reader
        assert reader is not None
        self._reader = None  # free the HTTP parser
        protocol = ServerCore(
            extensions=server_extensions(server.compression),
            subprotocols=None if subprotocol is None else [subprotocol],
            max_size=server.max_message_size,
            logger=_PROTOCOL_LOG,
        )
        protocol.receive_data(reader.head_bytes)
        request = next(event for event in protocol.events_received())
        response = protocol.accept(request)
        if subprotocol is not None and protocol.subprotocol != subprotocol:
            raise RuntimeError(
                f"subprotocol {subprotocol!r} was not offered; the client offered "
                f"{self.headers.get('sec-websocket-protocol')!r}"
            )
        for name, value in extra_headers or ():
            response.headers[name] = value
        protocol.send_response(response)
        transport = Transport(self._stream, nursery=self._nursery, max_outbox_bytes=server.max_outbox_bytes)
        for extension in protocol.extensions:
            if isinstance(extension, PerMessageDeflate):
                transport.deflater = server._deflater(extension.local_max_window_bits)
        for data in protocol.data_to_send():
            if data:
                await transport.write(data)
        if response.status_code != 101:
            # _read_request vetted the head, so this is a handshake websockets refused for a
            # reason of its own: the client got the response, the handler gets the error.
            raise HandshakeError(
                f"WebSocket handshake refused with {response.status_code}: {response.body!r}"
            )
        ws = WebSocket(
            protocol,
            transport,
            nursery=self._nursery,
            is_client=False,
            path=None,  # read from the request head, which the WebSocket keeps anyway
            remote=self.remote,
            request_head=self._head,
            close_timeout=server.close_timeout,
            max_message_size=server.max_message_size,
            max_queue=server.message_queue_size,
            answer_text_ping=answer_text_ping,
            metrics=server.metrics,
        )
        if reader.trailing:
            ws._feed(reader.trailing)
        if server.heartbeat is not None:
            ws._watch_idle(self._handler_scope, server.heartbeat.timeout)
        self.websocket = ws
        server.connections.add(ws)
        server.metrics.websockets_open += 1
        return ws

    async def respond(
        self,
        status: int = 200,
        body: bytes | str = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a complete HTTP response and close the connection after it."""
        self._claim()
        assert self._reader is not None
        payload = body.encode("utf-8") if isinstance(body, str) else body
        data = self._reader.response(status, payload, content_type=content_type, headers=headers)
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("client left before the %d response was sent", status)

    async def respond_text(self, text: str, status: int = 200) -> None:
        """Answer with ``text/plain``."""
        await self.respond(status, text)

    async def respond_json(self, obj: Any, status: int = 200) -> None:
        """Answer with ``application/json``."""
        await self.respond(status, dumps_json(obj), content_type="application/json")

    async def respond_html(self, html: str, status: int = 200) -> None:
        """Answer with ``text/html``."""
        await self.respond(status, html, content_type="text/html; charset=utf-8")

    async def reject(self, status: int, body: str | bytes = "") -> None:
        """Refuse a WebSocket upgrade (or any request) with an HTTP status, e.g. 401 or 403."""
        self._server.metrics.refused(RefusalReason.REJECTED)
        await self.respond(status, body)


class Server:
    """A running server: what ``await nursery.start(trionos.serve, 0, handler)`` returns.

    ``connections`` is the set of open WebSockets (read it, do not change it).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        origins: Sequence[str | None] | None = None,
        heartbeat: Heartbeat | None = Heartbeat(),  # noqa: B008 - frozen, so sharing is safe
        max_message_size: int = 1024 * 1024,
        max_head_size: int = 16 * 1024,
        handshake_timeout: float = 10.0,
        max_connections: int = 10_000,
        max_connections_per_address: int | None = 1_000,
        close_timeout: float = 5.0,
        max_outbox_bytes: int = 1024 * 1024,
        message_queue_size: int = 1,
        metrics: Metrics | None = None,
        compression: str | None = None,
    ) -> None:
        check_compression(compression)
        self.handler = handler
        #: ``"deflate"`` when permessage-deflate is offered to clients, else None.
        self.compression = compression
        # One compress-once Deflater per window size the clients negotiated (see _deflate).
        self._deflaters: dict[int, Deflater] = {}
        self.max_connections_per_address = max_connections_per_address
        #: The counters this server increments (see :class:`trionos.Metrics`).
        self.metrics = Metrics() if metrics is None else metrics
        # Open connections per remote host, for max_connections_per_address (no entry at zero).
        self._per_address: dict[str, int] = {}
        self.origins = None if origins is None else frozenset(origins)
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.max_head_size = max_head_size
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.close_timeout = close_timeout
        self.max_outbox_bytes = max_outbox_bytes
        self.message_queue_size = message_queue_size
        self.connections: set[WebSocket] = set()
        self.active_streams = 0
        #: True once :meth:`shutdown` was called.
        self.shutting_down = False
        # Each connection's one scope (for shutdown to cancel).
        self._scopes: set[trio.CancelScope] = set()
        self._support: SupportNursery | None = None
        self._finished = trio.Event()
        self.host = ""
        self.port = 0

    def _deflater(self, window_bits: int) -> Deflater:
        deflater = self._deflaters.get(window_bits)
        if deflater is None:
            deflater = self._deflaters[window_bits] = Deflater(window_bits)
        return deflater

    @property
    def url(self) -> str:
        """``ws://host:port`` of the first listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def run_pinger(self) -> None:
        """Ping every open connection on the heartbeat schedule, and start a servicer for each
        one nobody receives on (runs until cancelled; see :func:`trionos._heartbeat.run_keeper`)."""
        await run_keeper(self.heartbeat, lambda: self.connections)

    async def run_support(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the nursery every connection's background tasks live in (see :mod:`._support`).

        Start it before the first connection (``serve`` does). It is shielded and returns only
        after :meth:`shutdown` was called and the last connection has ended.
        """
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                self._support = SupportNursery(nursery)
                task_status.started()
                await self._finished.wait()
                nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Begin a graceful shutdown: cancel every handler and close its WebSocket with 1001.

        Each connection then has ``close_timeout`` seconds (plus one for the TCP close) to finish
        its closing handshake before it is cut. ``serve`` calls this when it is cancelled.
        """
        self.shutting_down = True
        for scope in self._scopes:
            scope.cancel()
        if not self.active_streams:
            self._finished.set()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection to its end. Never raises ``Exception`` for what a connection does.

        This is the isolation boundary: whatever one connection or its handler does, the error is
        logged and the server goes on serving everyone else. The handler runs in this task, in
        the connection's one cancel scope, which is shielded from outside cancellation so that a
        shutdown can still run the closing handshake: :meth:`shutdown` cancels the scope, and the
        handshake that follows has a deadline of its own.

        Raises :class:`RuntimeError` (a usage error) if :meth:`run_support` is not running.
        """
        if self._support is None:
            raise RuntimeError("Server.run_support() is not running (serve() starts it)")
        metrics = self.metrics
        metrics.connections_accepted += 1
        if self.shutting_down or self.active_streams >= self.max_connections:
            metrics.refused(RefusalReason.CAPACITY)
            await _send_and_close(stream, render_error(503, "too many connections"))
            return
        address = _peer_address(stream)
        host = None if address is None else address[0]
        if host is not None and self.max_connections_per_address is not None:
            if self._per_address.get(host, 0) >= self.max_connections_per_address:
                metrics.refused(RefusalReason.PER_ADDRESS)
                logger.debug("refused %s: %d connections from it already", host, self._per_address[host])
                await _send_and_close(stream, render_error(503, "too many connections from your address"))
                return
            self._per_address[host] = self._per_address.get(host, 0) + 1
        self.active_streams += 1
        metrics.connections_open += 1
        scope = trio.CancelScope(shield=True)
        self._scopes.add(scope)
        request: Request | None = None
        try:
            failed = False
            with scope:
                request = await self._read_request(stream, scope)
                if request is not None:
                    try:
                        await self.handler(request)
                    except ConnectionClosed as exc:
                        # The peer went away or broke the protocol: an ordinary network event.
                        logger.info("%r ended: %s", request, exc)
                    except Exception:
                        logger.exception("handler failed for %r", request)
                        failed = True
            if request is not None:
                # The closing handshake, also under a shutdown: shielded, and bounded.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + self.close_timeout + 1):
                    await self._after_handler(request, scope, failed=failed)
        finally:
            self._scopes.discard(scope)
            # Shielded, so that a cancelled server still counts this connection as ended.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self.active_streams -= 1
            metrics.connections_open -= 1
            if host is not None and self.max_connections_per_address is not None:
                left = self._per_address[host] - 1
                if left:
                    self._per_address[host] = left
                else:
                    del self._per_address[host]
            if request is not None and request.websocket is not None:
                metrics.websockets_open -= 1
                metrics.closed(request.websocket.close_code or 1006)
            if self.shutting_down and not self.active_streams:
                self._finished.set()

    async def _read_request(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> Request | None:
        """Read and vet the request head; None once the connection was answered or dropped."""
        reader = RequestReader(max_head_size=self.max_head_size)
        head: RequestHead | None = None
        with trio.move_on_after(self.handshake_timeout):
            try:
                while True:
                    head = reader.feed(await stream.receive_some(_RECEIVE_SIZE))
                    if head is not None:
                        break
            except HttpError as exc:
                logger.debug("bad request from %s: %s", _peer_address(stream), exc.detail)
                self.metrics.refused(
                    RefusalReason.HEAD_TOO_LARGE if exc.status == 431 else RefusalReason.BAD_REQUEST
                )
                await _send_and_close(stream, render_error(exc.status, exc.detail))
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
        if head is None:
            if reader.received:  # an empty connection is no refusal (e.g. a port probe)
                self.metrics.refused(RefusalReason.HANDSHAKE_TIMEOUT)
            return None
        if head.is_upgrade and (error := head.handshake_error()) is not None:
            logger.debug("bad upgrade from %s: %s", _peer_address(stream), error.detail)
            self.metrics.refused(RefusalReason.BAD_REQUEST)
            await _send_and_close(stream, render_error(error.status, error.detail))
            return None
        if head.is_upgrade and self.origins is not None and head.headers.get("origin") not in self.origins:
            self.metrics.refused(RefusalReason.ORIGIN)
            await _send_and_close(stream, render_error(403, "origin not allowed"))
            return None
        assert self._support is not None  # handle_stream checked
        return Request(head, reader, stream, self, self._support, scope)

    async def _after_handler(self, request: Request, scope: trio.CancelScope, *, failed: bool) -> None:
        if failed:
            await self._finish(request, 1011, "internal error", http_status=500)
        elif scope.cancelled_caught and self.shutting_down:
            await self._finish(request, 1001, "server shutting down", http_status=503)
        elif scope.cancelled_caught and request.websocket is not None:
            timeout = self.heartbeat.timeout if self.heartbeat else 0
            logger.info("closing %r: no traffic for %g s", request.websocket, timeout)
            self.metrics.heartbeat_timeouts += 1
            request.websocket.abort(1011, f"heartbeat timeout: no traffic for {timeout:g} s")
            self.connections.discard(request.websocket)
        else:
            await self._finish(request, 1000, "", http_status=404)

    async def _finish(self, request: Request, code: int, reason: str, *, http_status: int) -> None:
        ws = request.websocket
        if ws is not None:
            try:
                await ws.close(code, reason)
            finally:
                self.connections.discard(ws)
        elif not request.answered:
            with trio.move_on_after(self.close_timeout):
                await request.respond_text("Not Found\n" if http_status == 404 else "Error\n", http_status)


async def _send_and_close(stream: trio.abc.Stream, data: bytes) -> None:
    """Send a final response, then close without resetting the connection.

    Closing a socket that still has unread request bytes makes the kernel send RST, which can
    destroy the response before the client reads it. So: half-close, drain briefly, then close.
    """
    with trio.move_on_after(1.0):
        try:
            await stream.send_all(data)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(_RECEIVE_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def serve(
    port: int,
    handler: Handler,
    *,
    host: str | None = None,
    ssl_context: Any = None,
    origins: Sequence[str | None] | None = None,
    heartbeat: Heartbeat | None = Heartbeat(),  # noqa: B008 - frozen, so sharing is safe
    max_message_size: int = 1024 * 1024,
    max_head_size: int = 16 * 1024,
    handshake_timeout: float = 10.0,
    max_connections: int = 10_000,
    max_connections_per_address: int | None = 1_000,
    close_timeout: float = 5.0,
    max_outbox_bytes: int = 1024 * 1024,
    message_queue_size: int = 1,
    metrics: Metrics | None = None,
    compression: str | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP and WebSockets on ``port`` until cancelled.

    ``handler(request)`` runs once per connection, in its own task. Use
    ``server = await nursery.start(serve, 0, handler)`` to bind a free port and read
    ``server.port``. ``host=None`` listens on every interface.

    Limits (each a keyword argument; what happens at the bound):

    * ``max_message_size`` (1 MiB): a larger received message closes the connection with 1009.
    * ``max_head_size`` (16 KiB): a larger request head is answered with 431.
    * ``handshake_timeout`` (10 s): a request head that takes longer is dropped.
    * ``max_connections`` (10,000): further connections are answered with 503.
    * ``max_connections_per_address`` (1,000): connections from one remote host beyond this are
      answered with 503 (``None``: no per-address limit); counted as
      ``RefusalReason.PER_ADDRESS``.
    * ``max_outbox_bytes`` (1 MiB): bytes queued per connection while its socket is full; see the
      hub's slow-client policy for what happens beyond it.
    * ``message_queue_size`` (1): messages read ahead for a handler that is not receiving; when
      that many wait, the connection stops reading (TCP backpressure), and the idle clock stops
      too. A handler in ``recv`` reads and parses in its own task, with nothing held.
    * ``heartbeat`` (ping every 30 s, close after 60 s of silence); ``None`` switches it off.
    * ``origins``: when given, upgrades whose ``Origin`` is not listed get 403 (list ``None`` to
      admit clients that send no ``Origin``, such as non-browser clients).

    ``compression``: ``"deflate"`` offers permessage-deflate (RFC 7692) without context takeover
    on either side, so a broadcast is compressed once for all compressed recipients and an idle
    connection keeps no zlib state; ``None`` (the default, which keeps idle connections smallest)
    offers nothing. Messages under 64 bytes go out uncompressed.

    ``metrics`` (a fresh :class:`Metrics` when not given; read it as ``server.metrics``) counts
    connections accepted, open and refused (by reason), WebSockets open and closed (by code),
    messages and bytes in and out of direct ``send``/``recv``, and heartbeat timeouts.

    Cancellation: cancelling ``serve`` stops accepting, cancels every handler and closes each open
    WebSocket with 1001 "going away", waiting at most ``close_timeout`` for each; messages already
    handed to ``send`` are written before the close frame.
    """
    server = Server(
        handler,
        origins=origins,
        heartbeat=heartbeat,
        max_message_size=max_message_size,
        max_head_size=max_head_size,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        max_connections_per_address=max_connections_per_address,
        close_timeout=close_timeout,
        max_outbox_bytes=max_outbox_bytes,
        message_queue_size=message_queue_size,
        metrics=metrics,
        compression=compression,
    )
    listeners: list[Any] = list(await trio.open_tcp_listeners(port, host=host))
    sockname = listeners[0].socket.getsockname()
    server.host, server.port = str(sockname[0]), int(sockname[1])
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_support)
        # From here on every way out goes through shutdown(): the support nursery waits for it.
        try:
            nursery.start_soon(server.run_pinger)
            await nursery.start(trio.serve_listeners, server.handle_stream, listeners)
            logger.info("serving on %s", server.url)
            task_status.started(server)
            await trio.sleep_forever()
        finally:
            server.shutdown()
