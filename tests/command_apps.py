"""Apps the command tests serve (``python -m trionos tests.command_apps:NAME``).

``handler`` answers a plain GET with its process id (so that a test sees which worker answered)
and echoes WebSocket messages; ``app`` is the same as an :class:`~trionos.App` whose readiness is
whether the file named by ``$READY_FILE`` exists, and which logs its lifespan's start and end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trionos

logger = logging.getLogger("command_apps")


async def handler(req: trionos.Request) -> None:
    """Plain GET: ``pid N``; WebSocket: echo every message."""
    if not req.is_upgrade:
        await req.respond_text(f"pid {os.getpid()}")
        return
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def lifespan() -> AsyncIterator[trionos.Handler]:
    """Log entry and exit around the handler."""
    logger.info("lifespan entered")
    try:
        yield handler
    finally:
        logger.info("lifespan exited")


def ready() -> bool:
    """Ready while ``$READY_FILE`` exists."""
    return Path(os.environ.get("READY_FILE", "/nonexistent")).exists()


app = trionos.LifespanApp(lifespan, readiness=ready)

#: Not an app: the command refuses it.
not_an_app = 42


@asynccontextmanager
async def failing_lifespan() -> AsyncIterator[trionos.Handler]:
    """Fail to start while the file named by ``$FAIL_FILE`` exists; else serve ``handler``."""
    if os.path.exists(os.environ.get("FAIL_FILE", "/nonexistent")):  # noqa: ASYNC240  # start-up, once
        raise RuntimeError("told to fail at start-up")
    yield handler


#: An app that cannot start while ``$FAIL_FILE`` exists (a crash loop, for the supervisor's back-off).
flaky = trionos.LifespanApp(failing_lifespan)
