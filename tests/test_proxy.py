"""Behind a reverse proxy: the forwarded client in req.remote, req.scheme and the per-address limit.

The trusted proxy is a client on 127.0.0.1 that sends the headers nginx would; an untrusted client
connects from 127.0.0.2 (any 127/8 address is loopback on Linux).
"""

from __future__ import annotations

import json
import logging
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

import trionos
from tests.helpers import ServeFn, read_all
from trionos._cli import parse

UNTRUSTED = "127.0.0.2"


async def who(req: trionos.Request) -> None:
    """Answer with what the server knows of the client: over HTTP, or as the WebSocket's first message."""
    seen = {"remote": req.remote, "scheme": req.scheme}
    if req.is_upgrade:
        ws = await req.accept()
        await ws.send(json.dumps({**seen, "ws_remote": ws.remote}))
        await ws.recv()  # hold the connection until the client closes
    else:
        await req.respond_json(seen)


async def get(port: int, headers: bytes = b"", *, local_address: str | None = None) -> bytes:
    """A raw GET from *local_address*; the whole response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
        return await read_all(stream)


def body(response: bytes) -> object:
    """The JSON body of a raw response."""
    return json.loads(response.partition(b"\r\n\r\n")[2])


async def test_trusted_proxy_forwarded_address_reaches_the_request(start_server: ServeFn) -> None:
    """From a trusted proxy (loopback, by default), X-Forwarded-For/-Proto become remote and scheme."""
    server = await start_server(who)
    headers = [("X-Forwarded-For", "203.0.113.9, 198.51.100.7"), ("X-Forwarded-Proto", "https")]
    async with trionos.connect(server.url, extra_headers=headers) as ws:
        assert json.loads(await ws.recv()) == {
            "remote": ["198.51.100.7", 0],
            "scheme": "https",
            "ws_remote": ["198.51.100.7", 0],
        }
    forwarded = b'Forwarded: for="[2001:db8::7]:4711";proto=https\r\n'
    assert body(await get(server.port, forwarded)) == {"remote": ["2001:db8::7", 4711], "scheme": "https"}


async def test_untrusted_clients_forged_headers_change_nothing(start_server: ServeFn) -> None:
    """A peer outside forwarded_allow_ips is itself the client, whatever headers it sends."""
    server = await start_server(who, forwarded_allow_ips="127.0.0.1")
    forged = b"X-Forwarded-For: 198.51.100.7\r\nForwarded: for=198.51.100.8\r\nX-Forwarded-Proto: https\r\n"
    seen = body(await get(server.port, forged, local_address=UNTRUSTED))
    assert isinstance(seen, dict)
    assert seen["remote"][0] == UNTRUSTED and seen["scheme"] == "http"


async def test_no_trusted_proxy_means_no_header_is_read(start_server: ServeFn) -> None:
    """forwarded_allow_ips=() trusts even loopback peers no more than anyone else."""
    server = await start_server(who, forwarded_allow_ips=())
    seen = body(await get(server.port, b"X-Forwarded-For: 198.51.100.7\r\n"))
    assert isinstance(seen, dict) and seen["remote"][0] == "127.0.0.1"


async def test_per_address_limit_counts_forwarded_clients(start_server: ServeFn) -> None:
    """Behind a trusted proxy the limit is per forwarded client, applied once the head is read."""
    metrics = trionos.Metrics()
    server = await start_server(who, max_connections_per_address=1, metrics=metrics)
    alice = [("X-Forwarded-For", "198.51.100.1")]
    bob = [("X-Forwarded-For", "198.51.100.2")]
    async with trionos.connect(server.url, extra_headers=alice) as first:
        await first.recv()
        # Another client through the same proxy is not refused: the proxy's address is not the key.
        async with trionos.connect(server.url, extra_headers=bob) as other:
            assert json.loads(await other.recv())["remote"] == ["198.51.100.2", 0]
        with pytest.raises(trionos.ConnectionRejected) as refused:
            async with trionos.connect(server.url, extra_headers=alice):
                pass
        assert refused.value.status_code == 503
        assert metrics.connections_refused == {trionos.RefusalReason.PER_ADDRESS: 1}
    with trio.fail_after(10):
        while server.active_streams:
            await trio.testing.wait_all_tasks_blocked()
    async with trionos.connect(server.url, extra_headers=alice) as again:  # alice's slot is free again
        assert json.loads(await again.recv())["remote"] == ["198.51.100.1", 0]


async def test_forging_does_not_escape_the_per_address_limit(start_server: ServeFn) -> None:
    """An untrusted client is counted under its own address before its head is even read."""
    metrics = trionos.Metrics()
    server = await start_server(
        who, max_connections_per_address=1, forwarded_allow_ips="127.0.0.1", metrics=metrics
    )
    held = await trio.open_tcp_stream("127.0.0.1", server.port, local_address=UNTRUSTED)
    async with held:
        await held.send_all(b"GET / HTTP/1.1\r\nHost: test\r\n")  # an unfinished head holds the slot
        with trio.fail_after(10):
            while not server.active_streams:
                await trio.testing.wait_all_tasks_blocked()
        # The next one is refused, and a forged X-Forwarded-For does not help.
        assert (await get(server.port, local_address=UNTRUSTED)).startswith(b"HTTP/1.1 503")
        forged = b"X-Forwarded-For: 198.51.100.7\r\n"
        assert (await get(server.port, forged, local_address=UNTRUSTED)).startswith(b"HTTP/1.1 503")
        assert metrics.connections_refused == {trionos.RefusalReason.PER_ADDRESS: 2}
        # The trusted proxy's own connections are not counted with the untrusted client's.
        seen = body(await get(server.port, b"X-Forwarded-For: 198.51.100.7\r\n"))
        assert isinstance(seen, dict) and seen["remote"] == ["198.51.100.7", 0]


async def test_access_log_names_the_forwarded_client(
    start_server: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log writes the client a trusted proxy forwards for, not the proxy."""
    caplog.set_level(logging.INFO, logger="trionos.access")
    server = await start_server(who, access_log=True)
    await get(server.port, b"X-Forwarded-For: 198.51.100.7\r\n")
    with trio.fail_after(10):
        while server.active_streams:
            await trio.testing.wait_all_tasks_blocked()
    lines = [r.getMessage() for r in caplog.records if r.name == "trionos.access"]
    assert len(lines) == 1 and lines[0].startswith('198.51.100.7:0 "GET /" 200'), lines


@pytest.mark.parametrize(("allow", "remote"), [("*", ["198.51.100.7", 0]), ("127.0.0.1,::1", None)])
async def test_unix_socket_peer_is_trusted_only_with_star(
    nursery: trio.Nursery, tmp_path: Path, allow: str, remote: list[object] | None
) -> None:
    """A Unix socket's peer has no address: only forwarded_allow_ips="*" believes its headers."""
    path = str(tmp_path / "app.sock")
    await nursery.start(partial(trionos.serve, None, who, uds=path, forwarded_allow_ips=allow))
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
        assert body(await read_all(stream)) == {"remote": remote, "scheme": "http"}


async def test_scheme_over_tls_is_https_unless_a_trusted_proxy_says_otherwise(start_server: ServeFn) -> None:
    """Over TLS the scheme is https; X-Forwarded-Proto is read from trusted proxies only."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = await start_server(who, ssl_context=server_context, forwarded_allow_ips="127.0.0.1")
    for local_address, scheme in ((UNTRUSTED, "https"), ("127.0.0.1", "http")):
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port, local_address=local_address)
        stream = trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1", https_compatible=True)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-Proto: http\r\n\r\n")
            seen = body(await read_all(stream))
        assert isinstance(seen, dict) and seen["scheme"] == scheme


@pytest.mark.parametrize(
    ("flag", "trusted"),
    [("*", ("*",)), ("10.0.0.0/8, 127.0.0.1", ("10.0.0.0/8", "127.0.0.1")), ("", ())],
)
def test_the_command_takes_forwarded_allow_ips(flag: str, trusted: tuple[str, ...]) -> None:
    """--forwarded-allow-ips takes uvicorn's comma-separated list; '' trusts no one."""
    _, options = parse(["tests.proxied_app:app", "--forwarded-allow-ips", flag])
    assert options.forwarded_allow_ips == trusted
    assert parse(["tests.proxied_app:app"])[1].forwarded_allow_ips == ("127.0.0.1", "::1")
