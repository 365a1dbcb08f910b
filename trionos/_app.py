"""The app object the runner serves: a plain handler, or an :class:`App` that owns resources.

An app is either a handler (``async def handler(req: trionos.Request) -> None``) or an object with
one method, ``lifespan()``, returning an async context manager that yields the handler: the runner
(:func:`trionos.run`, the ``trionos`` command) enters it once per worker process before the first
connection and leaves it after the last one closed, the role ASGI's lifespan plays. A Hub, a
broker or a database pool is opened there and closed there. :class:`LifespanApp` builds one from
an ``@asynccontextmanager`` function. An app may also say whether it can serve
(:class:`SupportsReadiness`), which the runner's readiness check reports.

:func:`load_app` turns ``"MODULE:ATTR"`` into the object (what the command and the worker
processes do), with errors that say what was wrong in one line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from ._metrics import Metrics
from ._server import Handler

__all__ = ["App", "AppError", "LifespanApp", "SupportsReadiness", "app_lifespan", "app_metrics", "load_app"]


@runtime_checkable
class App(Protocol):
    """An application with a lifetime: what :func:`trionos.run` and the ``trionos`` command serve.

    The runner calls :meth:`lifespan` once per worker process, enters it before accepting the
    first connection, serves the handler it yields, and exits it after the last connection has
    closed (also on a drain: every WebSocket was closed with 1001 first). An exception on entry
    stops the process with status 1 before it listens.
    """

    def lifespan(self) -> AbstractAsyncContextManager[Handler]:
        """Open the app's resources and yield the request handler; close them on exit."""
        ...


@runtime_checkable
class SupportsReadiness(Protocol):
    """An app that can tell whether it is able to serve now (optional, next to :class:`App`).

    The runner's readiness check (``--health``) answers 503 while :meth:`ready` is False, e.g.
    while the app's broker is unreachable, so that a load balancer sends new users elsewhere.
    """

    def ready(self) -> bool:
        """True when the app can serve new users; called for each readiness request."""
        ...


@attrs.frozen
class LifespanApp:
    """An :class:`App` made of an ``@asynccontextmanager`` function that yields the handler.

    .. code-block:: python

        @asynccontextmanager
        async def chat() -> AsyncIterator[trionos.Handler]:
            async with trionos.Hub() as hub:
                yield make_handler(hub)

        app = trionos.LifespanApp(chat)

    Attributes:
        factory: called once per worker process; what it returns is entered before the first
            connection and exited after the last one.
        readiness: optional; called for each readiness check (``--health``): False answers 503.
            Without it the app is ready whenever it serves.
        metrics: optional; the server counts its connections into this
            :class:`~trionos.Metrics` too, so that one object (e.g. the hub's) has them all.
    """

    factory: Callable[[], AbstractAsyncContextManager[Handler]]
    readiness: Callable[[], bool] | None = None
    metrics: Metrics | None = None

    def lifespan(self) -> AbstractAsyncContextManager[Handler]:
        """The factory's context manager (see :class:`App`)."""
        return self.factory()

    def ready(self) -> bool:
        """What *readiness* says, or True without it (see :class:`SupportsReadiness`)."""
        return True if self.readiness is None else self.readiness()


class AppError(Exception):
    """``MODULE:ATTR`` does not name something the runner can serve (one line says why)."""


@asynccontextmanager
async def _plain(handler: Handler) -> AsyncIterator[Handler]:
    yield handler


def app_metrics(app: object) -> Metrics | None:
    """The :class:`~trionos.Metrics` *app* wants the server to count into, if it names one."""
    metrics = getattr(app, "metrics", None) if isinstance(app, App) else None
    return metrics if isinstance(metrics, Metrics) else None


def app_lifespan(app: App | Handler) -> AbstractAsyncContextManager[Handler]:
    """The lifespan to enter for *app*: its own, or one that just yields a plain handler.

    Args:
        app: an :class:`App` or a handler.

    Raises:
        AppError: *app* is neither.
    """
    if isinstance(app, App):
        return app.lifespan()
    if callable(app):
        return _plain(app)
    raise AppError(f"expected a handler (async def handler(req)) or an App with lifespan(), got {app!r}")


def load_app(target: str, app_dir: str | Path | None = None) -> App | Handler:
    """Import ``"MODULE:ATTR"`` and return the handler or :class:`App` it names.

    Args:
        target: the module's import path, a colon, and the attribute (dots for a nested one):
            ``"examples.room_chat:app"``.
        app_dir: a directory to put first on ``sys.path`` before importing (``--app-dir``); the
            current directory is always on it too, as for ``python -m``.

    Returns:
        The attribute.

    Raises:
        AppError: *target* is malformed, the module or attribute does not exist, or it is not
            an app (a missing optional dependency is :exc:`ModuleNotFoundError` instead).
    """
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise AppError(f"expected MODULE:ATTR (e.g. examples.room_chat:app), got {target!r}")
    for directory in (app_dir, "."):
        if directory is not None:
            path = str(Path(directory).resolve())
            if path not in sys.path:
                sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppError(f"cannot import module {module_name!r}: {exc}") from exc
        raise  # the module exists but needs something that is not installed
    value: object = module
    for name in attribute.split("."):
        try:
            value = getattr(value, name)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, App) and not callable(value):
        raise AppError(f"{target} is {value!r}: expected a handler or an App with lifespan()")
    return value  # a callable: the handler, as far as can be told
