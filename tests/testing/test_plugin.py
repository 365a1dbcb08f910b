"""The pytest plugin: fixtures, the backend marker and option, run through pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


PLUGIN_TESTS = """
import pytest
import trio
import trionos
from trionos.testing import expect_message, expect_silence


async def echo(req):
    if not req.is_upgrade:
        await req.respond_text("hello")
        return
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


@pytest.fixture
def trionos_handler():
    return echo


@pytest.fixture
def trionos_serve_options():
    return {"heartbeat": None}


async def test_default(trionos_app, trionos_client, trionos_backend):
    ws = await trionos_client("/")
    await ws.send("hi")
    await expect_message(ws, "hi")
    assert (await trionos_app.get("/")).text == "hello"
    assert trionos_app.backend == trionos_backend


@pytest.mark.trionos_backend("memory", "loopback")
async def test_marked(trionos_app, trionos_client):
    ws = await trionos_client()
    await ws.send(b"x")
    await expect_message(ws, b"x")


async def test_virtual_time(trionos_app, trionos_client, autojump_clock):
    ws = await trionos_client()
    await expect_silence(ws, timeout=3600)


async def test_fixed_backends(trionos_memory_server, trionos_loopback_server):
    assert trionos_memory_server.backend == "memory"
    assert trionos_loopback_server.server.port > 0
"""


def test_plugin_fixtures_marker_and_option(pytester: pytest.Pytester) -> None:
    """The plugin's fixtures work; the marker and --trionos-backend choose backends; loopback skips
    autojump tests."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=PLUGIN_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*test_default PASSED*", "*test_marked?memory? PASSED*", "*test_marked?loopback?*"]
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--trionos-backend=loopback", "-v")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*test_default?loopback? PASSED*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--trionos-backend=all")
    result.assert_outcomes(passed=6, skipped=1)


def test_plugin_asks_for_a_handler(pytester: pytest.Pytester) -> None:
    """Without a trionos_handler fixture the failure says what to define."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_app="async def test_x(trionos_app):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a `trionos_handler` fixture*"])
