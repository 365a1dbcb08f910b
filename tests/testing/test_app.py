"""open_app: one API for the memory and the loopback backend."""

from __future__ import annotations

import pytest

import trionos
import trionos.testing
from tests.testing.apps import NO_HEARTBEAT, echo
from trionos.testing import expect_message, open_app


@pytest.mark.parametrize("backend", ["memory", "loopback"])
async def test_both_backends_serve_websockets_and_http(backend: trionos.testing.Backend) -> None:
    """The same code talks to the memory and the loopback backend: connect, get, dial."""
    async with open_app(echo, backend=backend, **NO_HEARTBEAT) as app:
        assert app.backend == backend
        async with app.connect("/echo") as ws:
            await ws.send("hi")
            await expect_message(ws, "hi")
            await ws.send(b"\x00\x01")
            await expect_message(ws, b"\x00\x01")
        response = await app.get("/page?x=1")
        assert (response.status, response.text) == (200, "hello from /page")
        assert response.headers["content-type"].startswith("text/plain")
        stream = await app.dial()
        await stream.aclose()


async def test_open_app_rejects_an_unknown_backend() -> None:
    """A typo in the backend name is an error that lists the choices."""
    with pytest.raises(ValueError, match="unknown trionos test backend 'memroy'"):
        async with open_app(echo, backend="memroy"):  # type: ignore[arg-type]
            pass
