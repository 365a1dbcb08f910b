"""Issue #25's WebSocket-layer findings: bad heads, closing floods, inflation, pings, silent peers."""

from __future__ import annotations

import logging

import pytest
import trio

import trionos
from tests.helpers import ServeFn, echo_handler, read_all

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

BAD_HEADS = [
    pytest.param(b"X-Long: " + b"a" * 9000 + b"\r\n", 431, id="header-line-over-8192"),
    pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(130)), 431, id="130-headers"),
    pytest.param(b"X-Ctl: a\x01b\r\n", 400, id="control-character"),
    pytest.param(b"Sec-WebSocket-Extensions: permessage-deflate; ==\r\n", 400, id="bad-extensions"),
    pytest.param(b"Sec-WebSocket-Protocol: a b\r\n", 400, id="bad-subprotocols"),
]


@pytest.mark.parametrize(("extra", "status"), BAD_HEADS)
async def test_heads_the_websocket_core_refuses_get_a_4xx_and_no_traceback(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture, extra: bytes, status: int
) -> None:
    """A head h11 accepts but websockets refuses is answered 400/431 before the handler runs, quietly."""
    caplog.set_level(logging.DEBUG, logger="trionos")
    called: list[trionos.Request] = []

    async def handler(req: trionos.Request) -> None:
        called.append(req)
        await echo_handler(req)

    server = await start_server(handler, compression="deflate")
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(UPGRADE + extra + b"\r\n")
        response = await read_all(stream)
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert called == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    mine = [r for r in caplog.records if "bad upgrade" in r.getMessage()]
    assert len(mine) == 1 and len(mine[0].getMessage()) < 300
    reason = "head_too_large" if status == 431 else "bad_request"
    assert server.metrics.connections_refused == {reason: 1}
    async with trionos.connect(server.url) as ws:  # and the server keeps serving
        await ws.send("still here")
        assert await ws.recv() == "Echo: still here"
