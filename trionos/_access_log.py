"""The access log: one INFO line in the ``trionos.access`` logger per request that ends.

Written when :attr:`ServerOptions.access_log <trionos.ServerOptions.access_log>` is on (the
``trionos`` command's default). A plain HTTP request's line has its status and the bytes of the
response; a WebSocket session's, written when it ends, has its close code and the bytes read and
written over the session (frames and their headers, from the 101 response on)::

    127.0.0.1:52144 "GET /health/ready" 200 0.001s out=142B
    127.0.0.1:52146 "WS /chat" 1001 12.503s in=311B out=2408B

The remote address is the request's :attr:`~trionos.Request.remote`. The client's path is written
with ``%r``-style escaping of control characters, so that a line cannot be forged.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["AccessRecord", "access_line", "log_access", "logger"]

logger = logging.getLogger("trionos.access")


class _Session(Protocol):
    @property
    def close_code(self) -> int | None: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def bytes_sent(self) -> int: ...


class AccessRecord(Protocol):
    """What the access log reads of a request (a :class:`~trionos.Request` is one)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def remote(self) -> tuple[str, int] | None: ...

    @property
    def websocket(self) -> _Session | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def response_bytes(self) -> int: ...


def _printable(text: str) -> str:
    # The path is percent-decoded: escape what could break or forge a line.
    return text if text.isprintable() and '"' not in text else repr(text)[1:-1].replace('"', '\\"')


def _address(remote: tuple[str, int] | None) -> str:
    if remote is None:
        return "-"
    host, port = remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def access_line(record: AccessRecord, seconds: float) -> str:
    """The access log line for *record*, which took *seconds* (pure: no logging)."""
    path = _printable(record.path)
    ws = record.websocket
    if ws is not None:
        code = ws.close_code
        return (
            f'{_address(record.remote)} "WS {path}" {code if code is not None else 1006} '
            f"{seconds:.3f}s in={ws.bytes_received}B out={ws.bytes_sent}B"
        )
    status = record.status if record.status is not None else "-"
    return (
        f'{_address(record.remote)} "{_printable(record.method)} {path}" {status} '
        f"{seconds:.3f}s out={record.response_bytes}B"
    )


def log_access(record: AccessRecord, seconds: float) -> None:
    """Write *record*'s line to the ``trionos.access`` logger at INFO (when it is enabled)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", access_line(record, seconds))
