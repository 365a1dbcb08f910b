"""The pytest plugin registered through the ``pytest11`` entry point (fixtures for trionos apps).

It is loaded in every pytest run where trionos is installed, so it only defines fixtures, one
command-line option and one marker; nothing runs unless a test asks for a ``trionos_*`` fixture.
The fixtures are Trio fixtures: they need pytest-trio (``trio_mode = true``, or tests marked
``@pytest.mark.trio``).

You define ``trionos_handler`` (and optionally ``trionos_serve_options``); the plugin gives you

* ``trionos_app``: the app running on the selected backend (an :class:`~trionos.testing.AppServer`);
* ``trionos_client``: a factory, ``ws = await trionos_client("/path")``, for connections that stay
  open until the test ends;
* ``trionos_memory_server`` and ``trionos_loopback_server``: one backend each, whatever is selected;
* ``trionos_backend``: ``"memory"`` (the default) or ``"loopback"``.

Choosing the backend, strongest first: the marker ``@pytest.mark.trionos_backend("memory",
"loopback")`` (the test runs once per backend named; on a class or module too), the option
``--trionos-backend=memory|loopback|all``, then the ``trionos_backend`` fixture (override it in
a conftest.py). A loopback test that uses ``autojump_clock`` is skipped: real sockets look idle to
the clock, so it would jump through every time-out.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest
import trio
import trio.testing

from .._connection import WebSocket
from .._errors import ConnectionClosed
from .._server import Handler
from ._app import BACKENDS, AppServer, Backend, ClientFactory, open_app
from ._loopback import LoopbackServer, open_loopback_server
from ._memory import MemoryServer, open_memory_server

__all__: list[str] = []  # fixtures and hooks only

_OPTION = "--trionos-backend"
_MARKER = "trionos_backend"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--trionos-backend`` (pytest hook).

    Args:
        parser: pytest's option parser.
    """
    group = parser.getgroup("trionos", "trionos test kit")
    group.addoption(
        _OPTION,
        choices=[*BACKENDS, "all"],
        default=None,
        help="run tests that use trionos_app on this backend, or on all of them (default: memory)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``trionos_backend`` marker (pytest hook).

    Args:
        config: pytest's configuration.
    """
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*backends): run the test on each trionos test backend named ({', '.join(BACKENDS)});"
        " no arguments means all of them",
    )


def _backends_for(metafunc: pytest.Metafunc) -> tuple[str, ...] | None:
    """The backends the marker, else the option, asks for; None when neither says."""
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is not None:
        backends = tuple(marker.args) or BACKENDS
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: unknown trionos backend {unknown[0]!r};"
                f" expected one of {BACKENDS}"
            )
        return backends
    option = metafunc.config.getoption(_OPTION)
    if option is None:
        return None
    return BACKENDS if option == "all" else (option,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``trionos_backend`` from the marker or the option (pytest hook).

    A test that parametrizes ``trionos_backend`` itself is left alone.

    Args:
        metafunc: the test being collected.

    Raises:
        pytest.UsageError: the marker names an unknown backend.
    """
    if _MARKER not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if _MARKER in names:
            return  # the test parametrizes the backend itself
    backends = _backends_for(metafunc)
    if backends is not None:
        metafunc.parametrize(_MARKER, backends, ids=list(backends))


@pytest.fixture
def trionos_backend(request: pytest.FixtureRequest) -> str:
    """Which backend ``trionos_app`` runs on: ``"memory"`` unless the option says otherwise.

    Override it in a conftest.py to change the default for a directory, or parametrize it:
    ``@pytest.fixture(params=["memory", "loopback"])``. The marker and the command-line option
    take precedence over it.

    Args:
        request: pytest's request (for the option).

    Returns:
        ``"memory"`` or ``"loopback"``.
    """
    option = request.config.getoption(_OPTION)
    return "memory" if option in (None, "all") else str(option)


@pytest.fixture
def trionos_handler() -> Handler:
    """The handler under test: define this fixture yourself (it may be async, to open a Hub).

    Returns:
        Never: the default fails the test, saying what to define.
    """
    pytest.fail(
        "define a `trionos_handler` fixture that returns (or yields) your request handler "
        "to use the trionos_app, trionos_client and trionos_*_server fixtures",
        pytrace=False,
    )


@pytest.fixture
def trionos_serve_options() -> Mapping[str, Any]:
    """Keyword options for the server; override it to change them.

    Returns:
        Options such as ``heartbeat``, ``origins``, limits, and ``buffer_size`` for memory (by
        default none: the server has trionos's defaults).
    """
    return {}


def _skip_if_autojumping() -> None:
    """Skip the test when it runs on an autojumping MockClock (real sockets look idle to it)."""
    clock = trio.lowlevel.current_clock()
    if isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold != math.inf:
        pytest.skip(
            "the loopback backend cannot run on an autojumping MockClock: real sockets look idle to it"
        )


def _loopback_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options without the memory backend's own ``buffer_size``."""
    return {k: v for k, v in options.items() if k != "buffer_size"}


@pytest.fixture
async def trionos_memory_server(
    trionos_handler: Handler, trionos_serve_options: Mapping[str, Any]
) -> AsyncIterator[MemoryServer]:
    """The handler served over in-memory pipes (virtual time works).

    Args:
        trionos_handler: the handler fixture.
        trionos_serve_options: the options fixture.

    Yields:
        The :class:`~trionos.testing.MemoryServer`.
    """
    async with open_memory_server(trionos_handler, **trionos_serve_options) as memory:
        yield memory


@pytest.fixture
async def trionos_loopback_server(
    trionos_handler: Handler, trionos_serve_options: Mapping[str, Any]
) -> AsyncIterator[LoopbackServer]:
    """The handler served by :func:`trionos.serve` on 127.0.0.1, port 0.

    Skipped on an autojumping ``MockClock``.

    Args:
        trionos_handler: the handler fixture.
        trionos_serve_options: the options fixture (``buffer_size`` is ignored).

    Yields:
        The :class:`~trionos.testing.LoopbackServer` (``.server.port``, ``.url``).
    """
    _skip_if_autojumping()
    async with open_loopback_server(trionos_handler, **_loopback_options(trionos_serve_options)) as loopback:
        yield loopback


@pytest.fixture
async def trionos_app(
    trionos_handler: Handler, trionos_serve_options: Mapping[str, Any], trionos_backend: str
) -> AsyncIterator[AppServer]:
    """The handler running on the selected backend.

    Skipped on loopback under an autojumping ``MockClock``.

    Args:
        trionos_handler: the handler fixture.
        trionos_serve_options: the options fixture.
        trionos_backend: the backend fixture.

    Yields:
        The :class:`~trionos.testing.AppServer`: ``connect(path)``, ``get(path)``, ``dial()``.
    """
    if trionos_backend == "loopback":
        _skip_if_autojumping()
        options = _loopback_options(trionos_serve_options)
    else:
        options = dict(trionos_serve_options)
    # A str from a fixture the user may override: open_app itself refuses an unknown name.
    backend = cast(Backend, trionos_backend)
    async with open_app(trionos_handler, backend=backend, **options) as app:
        yield app


async def _hold(
    app: AppServer,
    path: str,
    options: dict[str, Any],
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[WebSocket],
) -> None:
    """Open one connection, hand it to the test, and keep it open until *done*."""
    try:
        async with app.connect(path, **options) as ws:
            task_status.started(ws)
            # Leave the block normally at teardown rather than by cancellation, so the closing
            # handshake runs while the connection's reader task is still alive to hear the reply.
            await done.wait()
    except ConnectionClosed:
        # A client heartbeat gave up on the server: the test sees it on ``ws``, not here.
        pass


@pytest.fixture
async def trionos_client(trionos_app: AppServer) -> AsyncIterator[ClientFactory]:
    """A factory of connections to ``trionos_app`` that stay open until the test ends.

    ``ws = await trionos_client("/chat", subprotocols=["v1"])`` takes the options of
    ``trionos_app.connect``; it raises what the handshake raises (e.g. ``ConnectionRejected``).
    At teardown every connection still open is closed with 1000, waiting at most its
    ``close_timeout`` for the server's reply.

    Args:
        trionos_app: the app fixture.

    Yields:
        The factory: an async callable ``(path="/", **options) -> WebSocket``.
    """
    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def open_client(path: str = "/", **options: Any) -> WebSocket:
            ws: WebSocket = await nursery.start(_hold, trionos_app, path, options, done)
            return ws

        yield open_client
        done.set()
