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
import socket
import ssl
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Unpack, cast

import attrs
import trio
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.http11 import Request as HandshakeRequest
from websockets.typing import LoggerLike, Subprotocol

from ._access_log import log_access
from ._connection import ProtocolLog, ServerCore, WebSocket
from ._deflate import Deflater, server_extensions
from ._errors import ConnectionClosed, HandshakeError
from ._forwarded import ForwardedClient, TrustedProxies, forwarded_client
from ._heartbeat import run_keeper
from ._http import (
    Headers,
    HttpError,
    RequestHead,
    RequestReader,
    parse_cookies,
    render_error,
    upgrade_head_error,
)
from ._json import dumps as dumps_json
from ._lazy import TrionosDeprecationWarning
from ._listen import open_listeners
from ._metrics import Metrics, RefusalReason
from ._options import ServerOptionKeywords, ServerOptions, resolve
from ._ratelimit import RateLimit
from ._support import SupportNursery, TaskSpawner
from ._transport import Transport

__all__ = ["Handler", "Request", "Server", "serve"]

logger = logging.getLogger("trionos.server")

# websockets' cores take a logger; ProtocolLog has the logger methods they call.
_PROTOCOL_LOG = cast("LoggerLike", ProtocolLog())

_DEFAULTS = ServerOptions()
_OPTION_NAMES = frozenset(attrs.fields_dict(ServerOptions))

#: What :func:`serve` runs for each request: an async function of the :class:`Request` that answers
#: it (``respond``) or accepts it (``accept``); it owns the connection until it returns.
Handler = Callable[["Request"], Awaitable[None]]

_RECEIVE_SIZE = 64 * 1024


def _peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        try:
            address = stream.socket.getpeername()
        except OSError:
            return None
        if not isinstance(address, tuple):  # a Unix socket's peer has no address
            return None
        return str(address[0]), int(address[1])
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
        "response_bytes",
        "scheme",
        "status",
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
        client: ForwardedClient,
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
        #: The client's ``(host, port)``, or None for in-memory connections: the peer's address,
        #: or, when the peer is a trusted proxy (:attr:`ServerOptions.forwarded_allow_ips
        #: <trionos.ServerOptions.forwarded_allow_ips>`), the client it forwards for (port 0 when
        #: the proxy does not say).
        self.remote = client.address
        #: ``"https"`` when the client reached us (or the first trusted proxy) over TLS, else
        #: ``"http"`` (a WebSocket upgrade over ``https`` is ``wss://``).
        self.scheme = client.scheme
        #: The status of the HTTP response sent, if one was (for the access log).
        self.status: int | None = None
        #: The size of the HTTP response sent, in bytes (for the access log).
        self.response_bytes = 0

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
    def cookies(self) -> dict[str, str]:
        """The request's cookies (every ``Cookie`` header), by name; empty when it sent none.

        Parsed with :class:`http.cookies.SimpleCookie`; a malformed header is skipped (as
        browsers and other servers do), not an error. On a WebSocket upgrade from a browser the
        cookies of the page's site are sent, so check ``headers["origin"]`` as well: any site
        can open a WebSocket to yours and the browser attaches your cookies (see the Browser
        authentication page of the documentation).
        """
        return parse_cookies(self._head.headers.get_all("cookie"))

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

        The connection's limits are the server's :class:`~trionos.ServerOptions`; its heartbeat
        starts now. It is closed (1000) when the handler returns.

        Args:
            subprotocol: the subprotocol to select; it must be one the client offered
                (``headers["sec-websocket-protocol"]``).
            extra_headers: more ``(name, value)`` headers for the 101 response.
            answer_text_ping: answer an inbound text message ``"ping"`` with ``"pong"`` and do
                not return it from ``recv`` (the application-level heartbeat browsers can send).

        Returns:
            The open :class:`~trionos.WebSocket`.

        Raises:
            RuntimeError: this is not an upgrade request, it was already answered, or the client
                did not offer *subprotocol*.
            HandshakeError: the handshake was refused for another reason (the client got the
                response).
        """
        if not self.is_upgrade:
            raise RuntimeError(f"accept() needs a WebSocket upgrade request, got {self!r}")
        self._claim()
        server = self._server
        options = server.options
        reader = self._reader
        assert reader is not None
        self._reader = None  # free the HTTP parser
        protocol = ServerCore(
            extensions=server_extensions(
                options.compression, context_takeover=options.compression_context_takeover
            ),
            subprotocols=None if subprotocol is None else [Subprotocol(subprotocol)],
            max_size=options.max_message_size,
            logger=_PROTOCOL_LOG,
        )
        protocol.receive_data(reader.head_bytes)
        # _read_request vetted the head, so the core's first event is the upgrade request.
        request = next(event for event in protocol.events_received())
        assert isinstance(request, HandshakeRequest)
        response = protocol.accept(request)
        if subprotocol is not None and protocol.subprotocol != subprotocol:
            raise RuntimeError(
                f"subprotocol {subprotocol!r} was not offered; the client offered "
                f"{self.headers.get('sec-websocket-protocol')!r}"
            )
        for name, value in extra_headers or ():
            response.headers[name] = value
        protocol.send_response(response)
        transport = Transport(self._stream, nursery=self._nursery, max_outbox_bytes=options.max_outbox_bytes)
        for extension in protocol.extensions:
            if isinstance(extension, PerMessageDeflate):
                bits = extension.local_max_window_bits
                # The client may have asked for no context takeover on our side: what was
                # negotiated decides.
                transport.deflater = (
                    server._deflater(bits)
                    if extension.local_no_context_takeover
                    else Deflater(bits, context_takeover=True, encoder=extension)
                )
        for data in protocol.data_to_send():
            if data:
                await transport.write(data)
        if response.status_code != 101:
            # _read_request vetted the head, so this is a handshake websockets refused for a
            # reason of its own: the client got the response, the handler gets the error.
            raise HandshakeError(
                f"WebSocket handshake refused with {response.status_code}: {response.body[:120]!r}"
            )
        ws = WebSocket(
            protocol,
            transport,
            nursery=self._nursery,
            is_client=False,
            path=None,  # read from the request head, which the WebSocket keeps anyway
            remote=self.remote,
            request_head=self._head,
            close_timeout=options.close_timeout,
            max_message_size=options.max_message_size,
            max_queue=options.message_queue_size,
            answer_text_ping=answer_text_ping,
            metrics=server.metrics,
            inflate_rate=options.max_inflate_rate,
            ping_limit=server.ping_limit,
        )
        if reader.trailing:
            ws._feed(reader.trailing)
        if options.heartbeat is not None:
            ws._watch_idle(self._handler_scope, options.heartbeat.timeout)
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
        """Send a complete HTTP response and close the connection after it.

        A client that left before the response was sent is not an error (it is logged at DEBUG).

        Args:
            status: the HTTP status code.
            body: the body; a ``str`` is encoded as UTF-8.
            content_type: the ``Content-Type`` header.
            headers: more ``(name, value)`` response headers.

        Raises:
            RuntimeError: the request was already answered.
        """
        self._claim()
        assert self._reader is not None
        payload = body.encode("utf-8") if isinstance(body, str) else body
        data = self._reader.response(status, payload, content_type=content_type, headers=headers)
        self.status, self.response_bytes = status, len(data)
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("client left before the %d response was sent", status)

    async def respond_text(self, text: str, status: int = 200) -> None:
        """Answer with ``text/plain`` (see :meth:`respond`).

        Args:
            text: the body.
            status: the HTTP status code.
        """
        await self.respond(status, text)

    async def respond_json(self, obj: Any, status: int = 200) -> None:
        """Answer with ``application/json`` (see :meth:`respond`).

        Args:
            obj: the value to send as compact JSON.
            status: the HTTP status code.
        """
        await self.respond(status, dumps_json(obj), content_type="application/json")

    async def respond_html(self, html: str, status: int = 200) -> None:
        """Answer with ``text/html`` (see :meth:`respond`).

        Args:
            html: the page.
            status: the HTTP status code.
        """
        await self.respond(status, html, content_type="text/html; charset=utf-8")

    async def reject(
        self, status: int, body: str | bytes = "", *, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Refuse a WebSocket upgrade (or any request) with an HTTP status.

        Counted as :attr:`RefusalReason.REJECTED <trionos.RefusalReason.REJECTED>`; the client
        sees :exc:`~trionos.ConnectionRejected` (with the status, headers and body).

        Args:
            status: the HTTP status code, e.g. 401 or 403.
            body: the response body.
            headers: more ``(name, value)`` response headers, e.g. ``WWW-Authenticate`` with a 401.
        """
        self._server.metrics.refused(RefusalReason.REJECTED)
        await self.respond(status, body, headers=headers)


class Server:
    """A running server: what ``await nursery.start(trionos.serve, 0, handler)`` returns.

    :func:`~trionos.serve` makes one and runs it; the test kit's memory server runs one without a
    listener. ``connections`` is the set of open WebSockets (read it, do not change it).

    Args:
        handler: ``async def handler(request)``, called with each connection's
            :class:`~trionos.Request`.
        options: the server's settings (see :class:`~trionos.ServerOptions`).
        metrics: the counters to increment (a fresh :class:`~trionos.Metrics` when not given).
        **keywords: the settings of :class:`~trionos.ServerOptions` as keyword arguments, instead
            of *options*.

    Raises:
        TypeError: both *options* and option keywords were given, or an unknown keyword.
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        options: ServerOptions | None = None,
        metrics: Metrics | None = None,
        **keywords: Unpack[ServerOptionKeywords],
    ) -> None:
        self.handler = handler
        #: The server's settings (see :class:`~trionos.ServerOptions`).
        self.options = resolve(options, keywords, base=_DEFAULTS, caller="Server")
        # One compress-once Deflater per window size the clients negotiated (see _deflate).
        self._deflaters: dict[int, Deflater] = {}
        #: The counters this server increments (see :class:`~trionos.Metrics`).
        self.metrics = Metrics() if metrics is None else metrics
        # Open connections per client host, for max_connections_per_address (no entry at zero).
        self._per_address: dict[str, int] = {}
        #: The ping budget each connection starts with (``max_ping_rate``, ``max_ping_burst``).
        self.ping_limit = RateLimit(
            rate=self.options.max_ping_rate,
            burst=self.options.max_ping_burst,
            close_after=self.options.max_ping_burst,
        )
        # Whose forwarding headers are believed (forwarded_allow_ips, parsed once).
        self._trusted = TrustedProxies.parse(self.options.forwarded_allow_ips)
        #: The open WebSockets (read it, do not change it).
        self.connections: set[WebSocket] = set()
        #: How many connections are being served (HTTP or WebSocket).
        self.active_streams = 0
        #: True once :meth:`shutdown` was called.
        self.shutting_down = False
        # Each connection's one scope (for shutdown to cancel).
        self._scopes: set[trio.CancelScope] = set()
        # The handshake timeouts of connections whose request head has not arrived yet, oldest
        # first (dicts keep insertion order): at capacity, the oldest is evicted for a newcomer.
        self._handshaking: dict[trio.CancelScope, None] = {}
        self._support: SupportNursery | None = None
        self._finished = trio.Event()
        #: The address of the first listener (set by :func:`~trionos.serve`).
        self.host = ""
        #: The port of the first listener (set by :func:`~trionos.serve`).
        self.port = 0
        #: True when :func:`~trionos.serve` serves TLS, so that :attr:`url` says ``wss://``.
        self.secure = False

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # The settings were attributes of their own before ServerOptions: still readable for
            # one release (runtime only, so that type checkers point at server.options).
            if name in _OPTION_NAMES:
                warnings.warn(
                    f"Server.{name} is deprecated and will be removed in 0.3; use Server.options.{name}",
                    TrionosDeprecationWarning,
                    stacklevel=2,
                )
                return getattr(self.options, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _deflater(self, window_bits: int) -> Deflater:
        deflater = self._deflaters.get(window_bits)
        if deflater is None:
            deflater = self._deflaters[window_bits] = Deflater(window_bits)
        return deflater

    @property
    def url(self) -> str:
        """``ws://host:port`` of the first listener (``wss://`` when serving TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.secure else 'ws'}://{host}:{self.port}"

    async def run_pinger(self) -> None:
        """Look after the open connections until cancelled (:func:`~trionos.serve` runs it).

        Pings every open connection on the heartbeat schedule, and starts a task that reads for
        each connection nobody has received on lately, so that it still answers pings and notices
        a close (see ``docs/heartbeats.md``).
        """
        await run_keeper(self.options.heartbeat, lambda: self.connections)

    async def run_support(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the nursery every connection's background tasks live in.

        Start it before the first connection (``serve`` does). It is shielded from cancellation
        and returns only after :meth:`shutdown` was called and the last connection has ended; an
        exception in one connection's background task is logged and ends that task only.

        Args:
            task_status: given by :meth:`trio.Nursery.start`, which returns once connections
                can be handled.
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
        its closing handshake before it is cut. ``serve`` calls this when it is cancelled; new
        connections are answered with 503 from here on. Calling it again does nothing more.
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

        Args:
            stream: the connection's byte stream (TCP, TLS, or an in-memory pipe).

        Raises:
            RuntimeError: :meth:`run_support` is not running (a usage error).
        """
        if self._support is None:
            raise RuntimeError("Server.run_support() is not running (serve() starts it)")
        metrics = self.metrics
        metrics.connections_accepted += 1
        if self.shutting_down or (
            self.active_streams >= self.options.max_connections and not self._evict_a_handshake()
        ):
            metrics.refused(RefusalReason.CAPACITY)
            await _send_and_close(stream, render_error(503, "too many connections"))
            return
        peer = _peer_address(stream)
        # A trusted proxy's connections are counted under the client it forwards for, which
        # only its request head says; everyone else's under their own address, at once.
        proxied = self._trusted.trusts(None if peer is None else peer[0])
        counted: str | None = None
        if peer is not None and not proxied:
            if not self._admit_address(peer[0]):
                await self._refuse_address(stream, peer[0])
                return
            counted = peer[0]
        self.active_streams += 1
        metrics.connections_open += 1
        started = trio.current_time()
        scope = trio.CancelScope(shield=True)
        self._scopes.add(scope)
        request: Request | None = None
        try:
            failed = False
            with scope:
                request = await self._read_request(stream, scope, peer)
                client = None if request is None or request.remote is None else request.remote[0]
                if proxied and client is not None:
                    if self._admit_address(client):
                        counted = client
                    else:
                        await self._refuse_address(stream, client)
                        request = None
                if request is not None:
                    try:
                        await self.handler(request)
                    except ConnectionClosed as exc:
                        # The peer went away or broke the protocol: an ordinary network event.
                        logger.info("%r ended: %s", request, exc)
                    except HandshakeError as exc:
                        # The client got its 4xx already (accept() sent it): one line, no traceback.
                        logger.info("%r refused: %s", request, exc)
                    except Exception:
                        logger.exception("handler failed for %r", request)
                        failed = True
            if request is not None:
                # The closing handshake, also under a shutdown: shielded, and bounded.
                deadline = trio.current_time() + self.options.close_timeout + 1
                with trio.CancelScope(shield=True, deadline=deadline):
                    await self._after_handler(request, scope, failed=failed)
        finally:
            self._scopes.discard(scope)
            # Shielded, so that a cancelled server still counts this connection as ended.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self.active_streams -= 1
            metrics.connections_open -= 1
            if counted is not None:
                self._release_address(counted)
            if request is not None and request.websocket is not None:
                metrics.websockets_open -= 1
                metrics.closed(request.websocket.close_code or 1006)
            if request is not None and self.options.access_log:
                log_access(request, trio.current_time() - started)
            if self.shutting_down and not self.active_streams:
                self._finished.set()

    def _evict_a_handshake(self) -> bool:
        """At capacity: end the oldest connection still without a request head; False if none.

        So connections that never send their head cannot keep a client that does out: each
        newcomer takes the place of the oldest of them. The evicted one ends at once, its slot
        freed as its task finishes (until then the server holds one connection more).
        """
        if not self._handshaking:
            return False
        oldest = next(iter(self._handshaking))
        del self._handshaking[oldest]
        oldest.cancel()
        self.metrics.handshakes_evicted += 1
        return True

    def _admit_address(self, host: str) -> bool:
        """Count one more connection from *host*; False (nothing counted) when it has its limit."""
        limit = self.options.max_connections_per_address
        if limit is None:
            return True  # no limit: nothing to count
        held = self._per_address.get(host, 0)
        if held >= limit:
            return False
        self._per_address[host] = held + 1
        return True

    def _release_address(self, host: str) -> None:
        left = self._per_address.get(host, 0) - 1
        if left > 0:
            self._per_address[host] = left
        else:
            self._per_address.pop(host, None)

    async def _refuse_address(self, stream: trio.abc.Stream, host: str) -> None:
        self.metrics.refused(RefusalReason.PER_ADDRESS)
        logger.debug("refused %s: %d connections from it already", host, self._per_address.get(host, 0))
        await _send_and_close(stream, render_error(503, "too many connections from your address"))

    async def _read_request(
        self, stream: trio.abc.Stream, scope: trio.CancelScope, peer: tuple[str, int] | None
    ) -> Request | None:
        """Read and vet the request head; None once the connection was answered or dropped."""
        reader = RequestReader(max_head_size=self.options.max_head_size)
        head: RequestHead | None = None
        metrics = self.metrics
        with trio.move_on_after(self.options.handshake_timeout) as waiting:
            self._handshaking[waiting] = None
            metrics.handshakes_open += 1
            try:
                while True:
                    head = reader.feed(await stream.receive_some(_RECEIVE_SIZE))
                    if head is not None:
                        break
            except HttpError as exc:
                logger.debug("bad request from %s: %s", peer, exc.detail)
                self.metrics.refused(
                    RefusalReason.HEAD_TOO_LARGE if exc.status == 431 else RefusalReason.BAD_REQUEST
                )
                await _send_and_close(stream, render_error(exc.status, exc.detail))
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            finally:
                metrics.handshakes_open -= 1
                evicted = self._handshaking.pop(waiting, waiting) is waiting
        if head is None:
            if not reader.received:
                metrics.silent_connections += 1  # timed out or evicted without sending a byte
            elif not evicted:  # an empty connection is no refusal (e.g. a port probe)
                metrics.refused(RefusalReason.HANDSHAKE_TIMEOUT)
            return None
        if head.is_upgrade and (error := self._upgrade_error(head, reader)) is not None:
            logger.debug("bad upgrade from %s: %s", peer, error.detail)
            self.metrics.refused(
                RefusalReason.HEAD_TOO_LARGE if error.status == 431 else RefusalReason.BAD_REQUEST
            )
            await _send_and_close(stream, render_error(error.status, error.detail))
            return None
        origins = self.options.origins
        if head.is_upgrade and origins is not None and head.headers.get("origin") not in origins:
            self.metrics.refused(RefusalReason.ORIGIN)
            await _send_and_close(stream, render_error(403, "origin not allowed"))
            return None
        assert self._support is not None  # handle_stream checked
        client = forwarded_client(peer, self._trusted, head.headers, secure=self.secure)
        return Request(head, reader, stream, self, self._support, scope, client)

    def _upgrade_error(self, head: RequestHead, reader: RequestReader) -> HttpError | None:
        """What is wrong with an upgrade request for us or for websockets' core, if anything."""
        return head.handshake_error() or upgrade_head_error(
            reader.head_bytes, extensions=self.options.compression is not None
        )

    async def _after_handler(self, request: Request, scope: trio.CancelScope, *, failed: bool) -> None:
        if failed:
            await self._finish(request, 1011, "internal error", http_status=500)
        elif scope.cancelled_caught and self.shutting_down:
            await self._finish(request, 1001, "server shutting down", http_status=503)
        elif scope.cancelled_caught and request.websocket is not None:
            timeout = self.options.heartbeat.timeout if self.options.heartbeat else 0
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
            with trio.move_on_after(self.options.close_timeout):
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
    port: int | None,
    handler: Handler,
    *,
    host: str | None = None,
    sock: socket.socket | None = None,
    fd: int | None = None,
    uds: str | None = None,
    reuse_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    options: ServerOptions | None = None,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **keywords: Unpack[ServerOptionKeywords],
) -> None:
    """Serve HTTP and WebSockets on *port* until cancelled.

    ``handler(request)`` runs once per connection, in its own task. Use
    ``server = await nursery.start(serve, 0, handler)`` to bind a free port and read
    ``server.port``. The limits, timeouts, heartbeat and compression are a
    :class:`~trionos.ServerOptions` (which says what happens at each bound), given as *options* or
    as keyword arguments: ``serve(8080, handler, max_connections=500)``.

    Cancellation: cancelling ``serve`` stops accepting, cancels every handler and closes each open
    WebSocket with 1001 "going away", waiting at most ``close_timeout`` for each; messages already
    handed to ``send`` are written before the close frame.

    Args:
        port: the TCP port; 0 picks a free one; ``None`` with *sock*, *fd* or *uds*.
        handler: ``async def handler(request)``, called with each connection's
            :class:`~trionos.Request`.
        host: the address to listen on; ``None`` listens on every interface.
        sock: serve on this listening socket, made by someone else (e.g. a supervisor that
            shares it between processes); it is closed when ``serve`` returns.
        fd: serve on the listening socket with this file descriptor (systemd's socket
            activation passes 3).
        uds: listen on this Unix socket path (for a proxy on the same host).
        reuse_port: bind *port* with ``SO_REUSEPORT``, so that several processes can listen on
            it (docs/design.md says why :func:`~trionos.run`'s workers share one socket instead).
        ssl_context: serve TLS (``https://`` and ``wss://``) with these settings; ``None`` serves
            plain TCP.
        options: the server's settings (see :class:`~trionos.ServerOptions`).
        metrics: the counters to increment (a fresh :class:`~trionos.Metrics` when not given;
            read it as ``server.metrics``): connections accepted, open and refused (by reason),
            WebSockets open and closed (by code), messages and bytes in and out of direct
            ``send``/``recv``, and heartbeat timeouts.
        task_status: given by :meth:`trio.Nursery.start`, which then returns the running
            :class:`~trionos.Server` once it listens.
        **keywords: the settings of :class:`~trionos.ServerOptions` as keyword arguments, instead
            of *options*.

    Raises:
        OSError: the port cannot be bound, or *fd* is not a stream socket.
        TypeError: both *options* and option keywords were given, or an unknown keyword; more
            than one of *sock*, *fd* and *uds*, or none of them and no port.
        ValueError: an option is out of range.
    """
    server = Server(handler, options=options, metrics=metrics, **keywords)
    listeners: list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]
    listeners = await open_listeners(port, host, sock=sock, fd=fd, uds=uds, reuse_port=reuse_port)
    sockname = listeners[0].socket.getsockname()
    if isinstance(sockname, tuple):
        server.host, server.port = str(sockname[0]), int(sockname[1])
    else:
        server.host = str(sockname)  # a Unix socket's path
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
        server.secure = True
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
