"""The bench protocol as an app for the ``trionos`` command (``bench/bench_workers.py`` runs it).

``python -m trionos trionos_app:app --app-dir bench/servers --workers N``: ``/echo``,
``/subscribe`` and ``/publish`` as in ``trionos_server.py``, through one ``trionos.Hub`` per
worker. With ``BENCH_REDIS=redis://...`` in the environment the hub's broker is Redis, so that a
broadcast reaches the subscribers of every worker.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trionos_server import handler

import trionos


@asynccontextmanager
async def lifespan() -> AsyncIterator[trionos.Handler]:
    """One hub per worker process, on Redis when ``BENCH_REDIS`` names one."""
    url = os.environ.get("BENCH_REDIS")
    broker = trionos.RedisBroker(url, prefix="bench-workers") if url else None
    async with trionos.Hub(broker=broker) as hub:
        yield functools.partial(handler, hub)


app = trionos.LifespanApp(lifespan)
