"""The browser client shipped in the package: ``trionos/static/trionos.js`` and its types.

:func:`respond_client` answers a request with the module, so a page can load it from the app that
serves its WebSocket (``pip install trionos`` is all it takes)::

    if req.path == "/trionos.js":
        await trionos.respond_client(req)

The file is read once per process (about 30 KB) and kept with its ETag; browsers revalidate it on
each load (``Cache-Control: no-cache``) and get ``304 Not Modified`` while it is unchanged, so an
upgraded package reaches them at once. :func:`client_path` gives the files' location for a bundler
or a static file server.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path

from ._server import Request

__all__ = ["CLIENT_CONTENT_TYPE", "client_path", "respond_client"]

#: What browsers need to run an ES module (RFC 9239).
CLIENT_CONTENT_TYPE = "text/javascript; charset=utf-8"

_FILES = ("trionos.js", "trionos.d.ts")


def client_path(name: str = "trionos.js") -> Path:
    """Where the installed package keeps a file of the browser client.

    Args:
        name: ``"trionos.js"`` (the ES module) or ``"trionos.d.ts"`` (its TypeScript types).

    Returns:
        The file's path (inside the installed package).

    Raises:
        ValueError: *name* is not one of the client's files.
    """
    if name not in _FILES:
        raise ValueError(f"the browser client's files are {', '.join(map(repr, _FILES))}, got {name!r}")
    return Path(str(resources.files(__package__).joinpath("static", name)))


@functools.cache
def _client() -> tuple[bytes, str]:
    body = client_path().read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def respond_client(req: Request) -> None:
    """Answer *req* with the browser client, ``trionos.js``.

    Sent as ``text/javascript`` with an ETag and ``Cache-Control: no-cache``; a request whose
    ``If-None-Match`` names the current ETag gets ``304 Not Modified`` and no body. Serve it from
    any path (``/trionos.js`` in the room chat) and import it in the page with a relative URL, so
    that a path prefix in front of the app keeps working.

    Args:
        req: the request to answer (a plain HTTP request, e.g. ``GET /trionos.js``).

    Raises:
        RuntimeError: the request was already answered.
    """
    body, etag = _client()
    headers = [("ETag", etag), ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")]
    # A proxy that compresses the file may weaken the tag (W/"..."): it still names these bytes.
    offered = {
        tag.strip().removeprefix("W/")
        for value in req.headers.get_all("if-none-match")
        for tag in value.split(",")
    }
    if etag in offered:
        await req.respond(304, b"", content_type=CLIENT_CONTENT_TYPE, headers=headers)
    else:
        await req.respond(200, body, content_type=CLIENT_CONTENT_TYPE, headers=headers)
