"""One serving process: the app's lifespan, the listener, signals, draining and logging.

:func:`run` is the library call behind the ``trionos`` command. With one worker it serves in this
process (:func:`serve_process`); with more it hands over to the supervisor (:mod:`._supervisor`),
whose worker processes run :func:`serve_process` on the socket they inherit.

A process serves like this: bind (before the event loop, so that a port in use is one line and
status 1), enter the app's lifespan, serve, log ``trionos listening on URL``. On SIGINT or SIGTERM
it drains: the process stops accepting, requests in flight finish, every WebSocket is closed
with 1001 (each has ``close_timeout`` to finish its closing handshake), the lifespan is exited,
``trionos stopped`` is logged and ``run`` returns (the command exits 0). A second signal during
the drain ends the process at once with status 1.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import logging.config
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, Unpack

import attrs
import trio

from ._app import App, AppError, SupportsReadiness, app_lifespan, app_metrics, load_app
from ._errors import BrokerError
from ._health import health_handler
from ._listen import bind_socket, listen_fds, open_listeners, socket_url
from ._options import ServerOptionKeywords, ServerOptions, resolve
from ._server import Handler, Server

__all__ = ["LOG_FORMAT", "Drain", "RunSettings", "StartupError", "configure_logging", "run", "serve_process"]

logger = logging.getLogger("trionos.run")

#: The format of the lines the runner's default logging writes (to stderr).
LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

_LEVELS = ("critical", "error", "warning", "info", "debug")
#: Seconds between looks at the requests still in flight during a drain.
_IN_FLIGHT_POLL = 0.01


class StartupError(Exception):
    """The process cannot start serving; the message is the one line the command prints."""


@attrs.frozen(kw_only=True)
class RunSettings:
    """Everything a serving process needs, in a form a worker process can receive (pickle).

    Attributes:
        target: ``"MODULE:ATTR"`` to import, when the app is not given as an object.
        app_dir: put first on ``sys.path`` before importing *target*.
        host: the address to bind (None: every interface).
        port: the TCP port (0: a free one).
        uds: a Unix socket path to bind instead.
        fd: an inherited listening socket's descriptor to serve on instead.
        workers: how many worker processes (1: serve in this process).
        reuse_port: bind with ``SO_REUSEPORT``, so that independent processes can share the port.
        options: the server's settings.
        health: the health endpoints' path prefix, or None for none.
        log_level: the root logger's level name, or None to leave logging alone.
        log_config: a JSON file for :func:`logging.config.dictConfig`, instead of *log_level*.
    """

    target: str | None = None
    app_dir: str | None = None
    host: str | None = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    workers: int = 1
    reuse_port: bool = False
    options: ServerOptions = attrs.field(factory=lambda: ServerOptions(access_log=True))
    health: str | None = None
    log_level: str | None = "info"
    log_config: str | None = None


def configure_logging(level: str | None, config: str | None) -> None:
    """Set up logging: *config* (a JSON dictConfig file), else *level* on the root logger.

    With neither, logging is left as it is (an application that set it up keeps its own).

    Raises:
        StartupError: the file cannot be read or is not a valid configuration.
    """
    if config is not None:
        try:
            logging.config.dictConfig(json.loads(Path(config).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise StartupError(f"cannot use --log-config {config}: {exc}") from exc
        return
    if level is None:
        return
    if level.lower() not in _LEVELS:
        raise StartupError(f"unknown log level {level!r}: expected one of {', '.join(_LEVELS)}")
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())


def listening_socket(settings: RunSettings) -> socket.socket:
    """The socket *settings* ask for: inherited (``fd``, systemd's), or bound now.

    Raises:
        StartupError: the address cannot be bound (one line saying which and why).
    """
    fd = settings.fd
    if fd is None and settings.uds is None:
        fds = listen_fds()
        if fds:
            fd = fds[0]
            # Meant for this process only: worker processes must not take them for theirs.
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)
    if fd is not None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise StartupError(f"cannot serve on file descriptor {fd}: {exc.strerror or exc}") from exc
        if sock.type != socket.SOCK_STREAM:
            raise StartupError(f"file descriptor {fd} is not a stream socket")
        return sock
    where = settings.uds if settings.uds is not None else f"{settings.host or '*'}:{settings.port}"
    try:
        return bind_socket(settings.host, settings.port, uds=settings.uds, reuse_port=settings.reuse_port)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {where}: {reason}") from exc


def _startup_error(exc: BaseException) -> StartupError | None:
    """The one-line error for an expected start-up failure inside the event loop, if it is one."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _startup_error(exc.exceptions[0])
    if isinstance(exc, ModuleNotFoundError):
        extra = {"coredis": "redis", "anyio": "redis", "prometheus_client": "prometheus"}.get(exc.name or "")
        hint = f" (pip install 'trionos[{extra}]')" if extra else ""
        return StartupError(f"missing dependency: {exc}{hint}")
    if isinstance(exc, BrokerError | StartupError):
        return StartupError(str(exc))
    return None


class Drain:
    """A serving process's stop state: asked to drain (by a signal, or a worker's supervisor)."""

    def __init__(self, startup: trio.CancelScope) -> None:
        #: Set once a drain was asked for.
        self.requested = trio.Event()
        #: True once the server listens (before, a drain just cancels the start-up).
        self.serving = False
        self._startup = startup

    def request(self) -> None:
        """Drain: stop serving, or stop starting up."""
        self.requested.set()
        if not self.serving:
            self._startup.cancel()

    def ready(self, app: object) -> bool:
        """Whether the process takes new users: not draining, and *app* ready if it says."""
        if self.requested.is_set():
            return False
        return app.ready() if isinstance(app, SupportsReadiness) else True


async def _watch_signals(drain: Drain) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                logger.warning("%s ignored: a rolling restart needs --workers 2 or more", name)
            elif not drain.requested.is_set():
                logger.info("%s: draining (a second signal stops at once)", name)
                drain.request()
            else:
                logger.warning("%s again: stopping now", name)
                logging.shutdown()
                os._exit(1)


async def _serve_app(
    app: App | Handler,
    settings: RunSettings,
    sock: socket.socket,
    drain: Drain,
    on_ready: Callable[[], None] | None,
) -> None:
    url = socket_url(sock)
    # A worker's supervisor writes the start-up and stop lines for the whole run.
    who = "trionos" if on_ready is None else "worker"
    async with app_lifespan(app) as handler:
        if settings.health is not None:
            handler = health_handler(settings.health, handler, functools.partial(drain.ready, app))
        server = Server(handler, options=settings.options, metrics=app_metrics(app))

        def serving() -> None:
            drain.serving = True
            logger.info("%s listening on %s", who, url)
            if on_ready is not None:
                on_ready()

        await _serve_until_drained(server, sock, drain, serving)
    logger.info("%s stopped", who)


async def _serve_until_drained(
    server: Server, sock: socket.socket, drain: Drain, serving: Callable[[], None]
) -> None:
    """Serve on *sock* until a drain is asked for, then drain in order.

    The order makes a drain refuse nothing: first the process stops accepting (with workers, the
    others take the connections still queued on the shared socket); then requests already
    accepted finish (at most ``close_timeout``); then :meth:`Server.shutdown` closes every
    WebSocket with 1001. ``serve``'s own cancellation does the last two at once, so a connection
    accepted at that moment would be answered with 503.
    """
    listeners = await open_listeners(None, None, sock=sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_support)
        try:
            nursery.start_soon(server.run_pinger)
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as acceptor:
                    await acceptor.start(
                        functools.partial(
                            trio.serve_listeners, server.handle_stream, listeners, handler_nursery=handlers
                        )
                    )
                    serving()
                    await drain.requested.wait()
                    acceptor.cancel_scope.cancel()  # closes the listeners
                with trio.move_on_after(server.options.close_timeout):
                    # A bounded look every few milliseconds: the server has no event for "only
                    # WebSockets are left", and a drain happens once.
                    while server.active_streams > len(server.connections):  # noqa: ASYNC110
                        await trio.sleep(_IN_FLIGHT_POLL)
                server.shutdown()
        finally:
            server.shutdown()
            nursery.cancel_scope.cancel()  # the pinger; run_support returns once all ended


async def _main(
    app: App | Handler,
    settings: RunSettings,
    sock: socket.socket,
    on_ready: Callable[[], None] | None,
    extra: Callable[[Drain], Awaitable[None]] | None,
) -> None:
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as startup:
            drain = Drain(startup)
            nursery.start_soon(_watch_signals, drain)
            if extra is not None:
                nursery.start_soon(extra, drain)
            await _serve_app(app, settings, sock, drain, on_ready)
        nursery.cancel_scope.cancel()


def serve_process(
    app: App | Handler,
    settings: RunSettings,
    sock: socket.socket,
    *,
    on_ready: Callable[[], None] | None = None,
    extra: Callable[[Drain], Awaitable[None]] | None = None,
) -> None:
    """Serve *app* on *sock* in this process until a signal drains it (see the module docstring).

    Args:
        app: the handler or :class:`~trionos.App`.
        settings: the server options and the health path.
        sock: the listening socket.
        on_ready: called once the process serves (a worker tells its supervisor).
        extra: another task to run next to the server, given the drain state (a worker
            watches its supervisor with it).

    Raises:
        StartupError: the app could not start (a missing dependency, an unreachable broker).
        Exception: what the app raised, unwrapped from the nurseries' exception groups.
    """
    try:
        trio.run(_main, app, settings, sock, on_ready, extra)
    except Exception as exc:
        error = _startup_error(exc)
        if error is not None:
            raise error from None
        # The app's own failure: its traceback, without the nurseries' groups around it.
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        raise leaf from None


def _fail(message: str) -> NoReturn:
    logger.error("%s", message)
    raise SystemExit(1)


def run(
    app: App | Handler | str,
    *,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    fd: int | None = None,
    workers: int = 1,
    reuse_port: bool = False,
    app_dir: str | None = None,
    options: ServerOptions | None = None,
    health: str | None = None,
    log_level: str | None = "info",
    log_config: str | None = None,
    **keywords: Unpack[ServerOptionKeywords],
) -> None:
    """Serve *app* until SIGINT or SIGTERM, then drain and return: what the ``trionos`` command does.

    The app is a handler, an :class:`~trionos.App`, or ``"MODULE:ATTR"`` naming one (required for
    ``workers > 1``, since every worker process imports it). See ``docs/running.md``.

    Args:
        app: what to serve.
        host: the address to listen on (127.0.0.1; None for every interface).
        port: the TCP port (8000; 0 picks a free one, and the start-up line shows it).
        uds: listen on this Unix socket path instead.
        fd: serve on this inherited listening socket instead (systemd's socket activation,
            ``LISTEN_FDS``, is used without it).
        workers: worker processes that share the listening socket (1: serve in this process).
        reuse_port: bind with ``SO_REUSEPORT`` (Linux), so that independently started trionos
            processes can listen on the same port; ``workers`` does not need it.
        app_dir: put this directory first on ``sys.path`` before importing *app*.
        options: the server's settings (:class:`~trionos.ServerOptions`); the access log is on
            unless they say otherwise.
        health: serve ``HEALTH/live`` and ``HEALTH/ready`` (see ``docs/running.md``).
        log_level: the root logger's level ("info"); None leaves logging as it is.
        log_config: a JSON :func:`logging.config.dictConfig` file, used instead of *log_level*.
        **keywords: settings of :class:`~trionos.ServerOptions`, instead of *options*.

    Raises:
        SystemExit: status 1 when it cannot start (a port in use, a bad *app*, a missing
            dependency, an unreachable broker: one ERROR line in ``trionos.run`` says which);
            status 1 at once on a second signal.
        TypeError: bad arguments (e.g. an app object with ``workers > 1``).
    """
    base = ServerOptions(access_log=True)
    settings = RunSettings(
        target=app if isinstance(app, str) else None,
        app_dir=app_dir,
        host=host,
        port=port,
        uds=uds,
        fd=fd,
        workers=workers,
        reuse_port=reuse_port,
        options=resolve(options, keywords, base=base, caller="run"),
        health=health,
        log_level=log_level,
        log_config=log_config,
    )
    if workers < 1:
        raise ValueError(f"run() workers must be at least 1, got {workers!r}")
    if workers > 1 and settings.target is None:
        raise TypeError('run(workers=N) needs the app as "MODULE:ATTR", which every worker imports')
    try:
        configure_logging(log_level, log_config)
        target = app_object(settings) if isinstance(app, str) else app
        sock = listening_socket(settings)
    except StartupError as exc:
        _fail(str(exc))
    with sock:
        if workers > 1:
            from ._supervisor import supervise

            try:
                supervise(settings, sock)
            except StartupError as exc:
                _fail(str(exc))
            return
        try:
            serve_process(target, settings, sock)
        except StartupError as exc:
            _fail(str(exc))


def app_object(settings: RunSettings) -> App | Handler:
    """Import *settings.target*.

    Raises:
        StartupError: it cannot be imported, or is not an app, or a dependency is missing.
    """
    assert settings.target is not None
    try:
        return load_app(settings.target, settings.app_dir)
    except AppError as exc:
        raise StartupError(str(exc)) from exc
    except ModuleNotFoundError as exc:
        error = _startup_error(exc)
        assert error is not None
        raise error from exc
