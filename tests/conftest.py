"""Shared fixtures: real loopback servers on port 0, and a Redis per test module.

Helpers (handlers, raw peers...) are in tests/helpers.py, imported explicitly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Unpack

import pytest
import trio
from hypothesis import settings

import trionos
from tests.helpers import ServeFn, ServeKeywords
from tests.redis_server import redis_url, unique_prefix

# `make test-all` (noxfile.py) selects "thorough": property tests without a count of their own
# run 2,000 examples, and the fast path's differential test (tests/test_fastpath.py) as many.
settings.register_profile("thorough", max_examples=2_000)
settings.load_profile(os.environ.get("TRIONOS_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    """A Redis shared by the tests of one module (each test uses its own key prefix)."""
    with redis_url() as url:
        yield url


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A Redis key prefix of this test's own."""
    return unique_prefix(request.node.name)


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[ServeFn]:
    """Start ``trionos.serve`` on 127.0.0.1 port 0 in the test's nursery; return the Server."""

    async def start(handler: trionos._server.Handler, **options: Unpack[ServeKeywords]) -> trionos.Server:
        options.setdefault("host", "127.0.0.1")
        server: trionos.Server = await nursery.start(
            lambda task_status: trionos.serve(0, handler, task_status=task_status, **options)
        )
        return server

    yield start
