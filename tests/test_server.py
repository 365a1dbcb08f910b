"""End-to-end: serve() and connect() over real loopback sockets (127.0.0.1, port 0)."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, TextMessage
from wsproto.events import Request as WsRequest

import trionos
from tests.helpers import ServeFn, echo_handler, http_get, read_all
from trionos.testing import open_loopback_server


async def test_http_and_upgrade_share_a_port(start_server: ServeFn) -> None:
    """A plain GET gets text and an upgrade gets a WebSocket, on the same port."""
    server = await start_server(echo_handler)
    response = await http_get(server.port)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"\r\n\r\nWebSocket endpoint")
    async with trionos.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await ws.send("hi")
        assert await ws.recv() == "Echo: hi"


async def test_text_and_binary_echo_in_order(start_server: ServeFn) -> None:
    """Text is echoed with a prefix, bytes unchanged, and 500 messages keep their order."""
    server = await start_server(echo_handler)
    async with trionos.connect(server.url) as ws:
        await ws.send(b"\x00\xff" * 1000)
        assert await ws.recv() == b"\x00\xff" * 1000
        for i in range(500):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(500)] == [f"Echo: {i}" for i in range(500)]


async def test_two_hundred_concurrent_clients(start_server: ServeFn) -> None:
    """200 clients at once each get their own replies."""
    server = await start_server(echo_handler)
    results: dict[int, list[str | bytes]] = {}

    async def client(n: int) -> None:
        async with trionos.connect(server.url) as ws:
            for i in range(5):
                await ws.send(f"{n}-{i}")
            results[n] = [await ws.recv() for _ in range(5)]

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(client, n)
    assert results == {n: [f"Echo: {n}-{i}" for i in range(5)] for n in range(200)}


async def test_json_helpers(start_server: ServeFn) -> None:
    """send_json/recv_json round-trip, and bad JSON is a DecodeError that keeps the connection."""

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        while True:
            try:
                obj = await ws.recv_json()
            except trionos.DecodeError as exc:
                await ws.send_json({"error": str(exc)})
                continue
            except trionos.ConnectionClosed:
                return
            await ws.send_json({"got": obj})

    server = await start_server(handler)
    async with trionos.connect(server.url) as ws:
        await ws.send_json({"a": [1, "é"]})
        assert await ws.recv_json() == {"got": {"a": [1, "é"]}}
        await ws.send('{"a": ')
        assert "invalid JSON at line 1 column 7" in (await ws.recv_json())["error"]
        await ws.send_json(None)
        assert await ws.recv_json() == {"got": None}


async def test_close_codes_both_ways(start_server: ServeFn) -> None:
    """A client's close code reaches the handler, and the handler's reaches the client."""
    seen: list[trionos.ConnectionClosed] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        if req.path == "/server-closes":
            await ws.close(4001, "bye from server")
            return
        try:
            await ws.recv()
        except trionos.ConnectionClosed as exc:
            seen.append(exc)

    server = await start_server(handler)
    async with trionos.connect(server.url + "/client-closes") as ws:
        await ws.close(4000, "bye from client")
    async with trionos.connect(server.url + "/server-closes") as ws:
        with pytest.raises(trionos.ConnectionClosed) as info:
            await ws.recv()
        assert (info.value.code, info.value.reason) == (4001, "bye from server")
        assert not info.value.normal
        assert ws.closed and ws.close_code == 4001
    await trio.testing.wait_all_tasks_blocked()
    assert [(e.code, e.reason) for e in seen] == [(4000, "bye from client")]


async def test_async_for_ends_quietly_on_normal_close(start_server: ServeFn) -> None:
    """Iterating stops without an error when the peer closes with 1000."""
    done = trio.Event()
    received: list[str | bytes] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async for message in ws:
            received.append(message)
        done.set()

    server = await start_server(handler)
    async with trionos.connect(server.url) as ws:
        await ws.send("one")
        await ws.send("two")
    await done.wait()
    assert received == ["one", "two"]


async def test_abrupt_disconnect_ends_only_that_handler(start_server: ServeFn) -> None:
    """A client that drops TCP gives its handler ConnectionClosed(1006) and leaks nothing."""
    errors: list[trionos.ConnectionClosed] = []
    accepted = trio.Event()
    handler_done = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        accepted.set()
        try:
            await ws.recv()
        except trionos.ConnectionClosed as exc:
            errors.append(exc)
        handler_done.set()

    server = await start_server(handler)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await accepted.wait()
    await stream.aclose()
    await handler_done.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert server.active_streams == 0
    assert [e.code for e in errors] == [1006]
    assert not server.connections


async def test_oversize_message_closes_with_1009(start_server: ServeFn) -> None:
    """A message over max_message_size closes the connection with 1009."""
    server = await start_server(echo_handler, max_message_size=1000)
    async with trionos.connect(server.url) as ws:
        await ws.send("x" * 1001)
        with pytest.raises(trionos.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.code == 1009


async def test_failing_handler_gives_500_or_1011_and_server_survives(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler yields 500 (HTTP) or 1011 (WebSocket), is logged, and others keep working."""

    async def handler(req: trionos.Request) -> None:
        if req.path == "/boom":
            if req.is_upgrade:
                ws = await req.accept()
                await ws.recv()
            raise ValueError("kaboom")
        await echo_handler(req)

    server = await start_server(handler)
    assert (await http_get(server.port, "/boom")).startswith(b"HTTP/1.1 500 ")
    async with trionos.connect(server.url + "/boom") as ws:
        await ws.send("trigger")
        with pytest.raises(trionos.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.code == 1011
    async with trionos.connect(server.url) as ws:
        await ws.send("still here")
        assert await ws.recv() == "Echo: still here"
    assert "kaboom" in caplog.text


async def test_unanswered_request_is_404(start_server: ServeFn) -> None:
    """A handler that ignores a plain request yields 404."""

    async def handler(req: trionos.Request) -> None:
        return None

    server = await start_server(handler)
    assert (await http_get(server.port, "/nothing")).startswith(b"HTTP/1.1 404 ")


async def test_limits_on_bad_requests(start_server: ServeFn) -> None:
    """Oversized heads get 431, garbage gets 400, and the server keeps serving."""
    server = await start_server(echo_handler, max_head_size=1024)
    response = await http_get(server.port, extra=b"X-Big: " + b"a" * 4000 + b"\r\n")
    assert response.startswith(b"HTTP/1.1 431 ")
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"\x16\x03\x01garbage\r\n\r\n")
        assert (await read_all(stream)).startswith(b"HTTP/1.1 400 ")
    assert (await http_get(server.port)).startswith(b"HTTP/1.1 200 ")


async def test_connection_cap_answers_503(start_server: ServeFn) -> None:
    """Beyond max_connections, new connections get 503 until a slot frees up."""
    server = await start_server(echo_handler, max_connections=2)
    async with trionos.connect(server.url) as a, trionos.connect(server.url) as b:
        await a.send("a")
        await b.send("b")
        assert await a.recv() == "Echo: a"
        assert await b.recv() == "Echo: b"
        assert (await http_get(server.port)).startswith(b"HTTP/1.1 503 ")
        with pytest.raises(trionos.ConnectionRejected) as info:
            async with trionos.connect(server.url):
                pass
        assert info.value.status_code == 503


async def test_origin_check_and_auth_by_reject(start_server: ServeFn) -> None:
    """Unlisted origins get 403; a handler can refuse an upgrade with reject(401)."""

    async def handler(req: trionos.Request) -> None:
        if req.query.get("token") != "secret":
            await req.reject(401, "bad token")
            return
        await echo_handler(req)

    server = await start_server(handler, origins=["http://good.example"])
    good = [("Origin", "http://good.example")]
    with pytest.raises(trionos.ConnectionRejected) as info:
        async with trionos.connect(server.url + "/?token=secret", extra_headers=[("Origin", "http://evil")]):
            pass
    assert info.value.status_code == 403
    with pytest.raises(trionos.ConnectionRejected) as info:
        async with trionos.connect(server.url + "/?token=wrong", extra_headers=good):
            pass
    assert (info.value.status_code, info.value.body) == (401, b"bad token")
    async with trionos.connect(server.url + "/?token=secret", extra_headers=good) as ws:
        await ws.send("in")
        assert await ws.recv() == "Echo: in"


async def test_handshake_headers_reach_the_handler_and_the_websocket(start_server: ServeFn) -> None:
    """The request's headers stay readable after accept, on the Request and on the WebSocket."""
    seen: list[tuple[str, str, list[str], bool]] = []

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        seen.append(
            (
                req.headers["x-user"],
                ws.request_headers["X-User"],
                ws.request_headers.get_all("x-tag"),
                req.is_upgrade,
            )
        )
        await ws.send("ok")

    server = await start_server(handler)
    headers = [("X-User", "ann"), ("X-Tag", "a"), ("X-Tag", "b:c")]
    async with trionos.connect(server.url, extra_headers=headers) as ws:
        assert await ws.recv() == "ok"
        assert len(ws.request_headers) == 0  # the client side has no request to report
    assert seen == [("ann", "ann", ["a", "b:c"], True)]


async def test_connect_errors_are_handshake_errors() -> None:
    """Nothing listening, or a bad URL, fails clearly."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(trionos.HandshakeError, match="could not connect"):
        async with trionos.connect(f"ws://127.0.0.1:{port}/"):
            pass
    with pytest.raises(ValueError, match="expected a ws:// or wss:// URL"):
        async with trionos.connect("http://127.0.0.1/"):
            pass


async def test_connect_timeout(nursery: trio.Nursery) -> None:
    """A server that never answers the upgrade raises ConnectTimeout."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, silent, listeners)
    with pytest.raises(trionos.ConnectTimeout):
        async with trionos.connect(f"ws://127.0.0.1:{port}/", connect_timeout=0.2):
            pass


async def test_shutdown_closes_with_1001_after_pending_messages(nursery: trio.Nursery) -> None:
    """Cancelling serve sends what was handed to send(), then closes every WebSocket with 1001."""
    ready = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        for i in range(100):
            await ws.send(f"m{i}")
        ready.set()
        await trio.sleep_forever()

    server_scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[trionos.Server]) -> None:
        with server_scope:
            await trionos.serve(0, handler, host="127.0.0.1", task_status=task_status)

    server = await nursery.start(run)
    async with trionos.connect(server.url, message_queue_size=200) as ws:
        await ready.wait()
        server_scope.cancel()
        received = [await ws.recv() for _ in range(100)]
        with pytest.raises(trionos.ConnectionClosed) as info:
            await ws.recv()
    assert received == [f"m{i}" for i in range(100)]
    assert info.value.code == 1001 and info.value.normal


async def test_wss_with_trustme(nursery: trio.Nursery) -> None:
    """wss:// works end to end with a certificate from a test CA, and Server.url says wss://."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = await nursery.start(
        lambda task_status: trionos.serve(
            0, echo_handler, host="127.0.0.1", ssl_context=server_context, task_status=task_status
        )
    )
    assert server.url == f"wss://127.0.0.1:{server.port}"
    async with trionos.connect(server.url + "/", ssl_context=client_context) as ws:
        await ws.send("secure")
        assert await ws.recv() == "Echo: secure"
        await ws.send(b"\x01" * 100_000)
        assert await ws.recv() == b"\x01" * 100_000
    with pytest.raises(trionos.HandshakeError, match="TLS"):
        async with trionos.connect(f"wss://127.0.0.1:{server.port}/"):
            pass


async def test_the_loopback_test_server_serves_tls_too() -> None:
    """open_loopback_server(ssl_context=...) serves wss://, and its connect takes the client's context."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with open_loopback_server(echo_handler, ssl_context=server_context) as app:
        assert app.url == f"wss://127.0.0.1:{app.server.port}" and app.server.secure
        async with app.connect("/", ssl_context=client_context) as ws:
            await ws.send("secure")
            assert await ws.recv() == "Echo: secure"


async def test_cancelled_send_never_leaves_half_a_frame(start_server: ServeFn) -> None:
    """A send cancelled while the socket is full still completes the frame, in order, before the next."""
    big = b"\x07" * (8 * 1024 * 1024)
    cancelled = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        with trio.move_on_after(0.2) as scope:
            await ws.send(big)  # the peer is not reading: this blocks mid-frame
        assert scope.cancelled_caught
        cancelled.set()
        await ws.send("after")
        await ws.recv()

    server = await start_server(handler)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    conn = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(conn.send(WsRequest(host="test", target="/")))
    await cancelled.wait()  # only now does the peer start reading
    messages: list[bytes | str] = []
    data_parts: list[bytes] = []
    text_parts: list[str] = []
    while len(messages) < 2:
        conn.receive_data(await stream.receive_some(1 << 20))
        for event in conn.events():
            if isinstance(event, BytesMessage):
                data_parts.append(bytes(event.data))
                if event.message_finished:
                    messages.append(b"".join(data_parts))
                    data_parts = []
            elif isinstance(event, TextMessage):
                text_parts.append(event.data)
                if event.message_finished:
                    messages.append("".join(text_parts))
                    text_parts = []
    assert messages == [big, "after"]
    await stream.aclose()


@pytest.mark.parametrize("reply", [b"", b"hello there\r\n\r\n"])
async def test_server_that_hangs_up_or_talks_nonsense_fails_the_handshake(
    nursery: trio.Nursery, reply: bytes
) -> None:
    """A peer that closes before the upgrade, or answers with non-HTTP, is a HandshakeError at once."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def rude(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        if reply:
            await stream.send_all(reply)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, rude, listeners)
    with trio.fail_after(5):  # connect_timeout is 60: failing fast is the point
        with pytest.raises(trionos.HandshakeError) as info:
            async with trionos.connect(f"ws://127.0.0.1:{port}/", connect_timeout=60):
                pass
    assert not isinstance(info.value, trionos.ConnectTimeout)
