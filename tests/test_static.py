"""The browser client shipped in the package, and respond_client serving it over real loopback HTTP."""

from __future__ import annotations

import re

import pytest

import trionos
from tests.helpers import ServeFn, http_get


async def client_handler(req: trionos.Request) -> None:
    """Serve trionos.js at /trionos.js, 404 elsewhere."""
    if req.path == "/trionos.js":
        await trionos.respond_client(req)


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers (lower-cased names) and body of a raw response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


def test_the_package_carries_the_module_and_its_types() -> None:
    """client_path finds trionos.js (an ES module exporting Socket) and trionos.d.ts in the package."""
    source = trionos.client_path().read_text(encoding="utf-8")
    assert "export class Socket extends EventTarget" in source
    assert not re.search(r"^\s*import\b", source, re.MULTILINE)  # no dependency
    types = trionos.client_path("trionos.d.ts").read_text(encoding="utf-8")
    assert "export declare class Socket" in types
    with pytest.raises(ValueError, match=r"trionos\.js"):
        trionos.client_path("other.js")


async def test_respond_client_serves_a_module_with_an_etag_and_revalidation(start_server: ServeFn) -> None:
    """200 with text/javascript, no-cache and an ETag; the same ETag (strong or weak) gets a 304."""
    server = await start_server(client_handler)
    status, headers, body = split(await http_get(server.port, "/trionos.js"))
    assert status.startswith("HTTP/1.1 200 ")
    assert headers["content-type"] == trionos.CLIENT_CONTENT_TYPE == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert body == trionos.client_path().read_bytes()
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for offered in (etag, f'"other", W/{etag}'):
        status, headers, body = split(
            await http_get(server.port, "/trionos.js", extra=f"If-None-Match: {offered}\r\n".encode())
        )
        assert status.startswith("HTTP/1.1 304 ")
        assert headers["etag"] == etag
        assert body == b""
    status, _, body = split(await http_get(server.port, "/trionos.js", extra=b'If-None-Match: "stale"\r\n'))
    assert status.startswith("HTTP/1.1 200 ")
    assert body == trionos.client_path().read_bytes()
