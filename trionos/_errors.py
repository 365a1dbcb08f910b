"""Every error trionos raises, under one root.

The hierarchy::

    TrionosError                      root: ``except trionos.TrionosError`` catches them all
    ├── ConnectionClosed              the connection is closed (remote or local); ``.code``, ``.reason``
    ├── HandshakeError                a WebSocket connection could not be opened (remote fault)
    │   ├── ConnectTimeout            ... within ``connect_timeout``
    │   └── ConnectionRejected        ... because the server answered with an HTTP status (``.status_code``)
    ├── DecodeError                   a peer sent a payload we cannot read (remote fault, also ValueError):
    │                                 bad JSON, wrong tag, missing or ill-typed field, bad base64
    ├── EncodeError                   this program tried to send a value the codec cannot encode
    │                                 (local fault, also TypeError)
    └── BrokerError                   the scale-out broker (Redis) is unreachable or failed
        └── BrokerUncertain           ... after the request was sent: it may have taken effect

Remote faults (something the peer did) and local faults (something this program did) are separate
classes, so a server can answer the first with an error message and let the second crash loudly.
Foreign exceptions (trio-websocket's, cattrs', ``json``'s, ``binascii``'s) are translated at the
boundary and chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "BrokerError",
    "BrokerUncertain",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionRejected",
    "DecodeError",
    "EncodeError",
    "HandshakeError",
    "TrionosError",
]

#: Close codes that mean "the connection ended as intended" (RFC 6455 section 7.4.1).
NORMAL_CLOSE_CODES = frozenset({1000, 1001})


class TrionosError(Exception):
    """The root of every error raised by trionos."""


class ConnectionClosed(TrionosError):
    """The WebSocket connection is closed.

    Raised by ``recv()`` once every message that arrived before the close has been read, and by
    ``send()`` on a closed connection. ``code`` is the close code (1006 when the TCP connection
    ended without a closing handshake) and ``reason`` the close reason ("" when none was given).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"connection closed with code {code}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)

    @property
    def normal(self) -> bool:
        """True for a normal close (1000 "normal closure" or 1001 "going away")."""
        return self.code in NORMAL_CLOSE_CODES


class HandshakeError(TrionosError):
    """A WebSocket connection could not be opened: DNS, TCP, TLS or the HTTP upgrade failed."""


class ConnectTimeout(HandshakeError):
    """The connection (TCP, TLS and upgrade together) did not complete within ``connect_timeout``."""


class ConnectionRejected(HandshakeError):
    """The server answered the upgrade request with an HTTP response instead of accepting it.

    Attributes:
        status_code: the response's status.
        body: its body.
        headers: its headers, as ``(name, value)`` pairs in the order received (a 401's
            ``WWW-Authenticate``, say).
    """

    def __init__(
        self, status_code: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = headers
        text = f"server rejected the WebSocket upgrade with HTTP {status_code}"
        if body:
            text += f": {body[:200].decode('utf-8', 'replace')!r}"
        super().__init__(text)


class DecodeError(TrionosError, ValueError):
    """A payload from the peer could not be decoded; the message says what was expected and what came."""


class EncodeError(TrionosError, TypeError):
    """This program asked to encode a value that the codec does not know."""


class BrokerError(TrionosError):
    """The scale-out broker could not be reached, or failed while in use."""


class BrokerUncertain(BrokerError):
    """The broker failed after the request was sent: it may or may not have taken effect.

    A broadcast into a room whose history is in Redis that raises this may have been kept and
    delivered (Redis ran the script, its answer came too late). Tell the user "may not have been
    sent", not "not sent"; a plain :exc:`BrokerError` means it certainly was not.
    """


def exception_leaves(exc: BaseException) -> Iterator[BaseException]:
    """Iterate over the exceptions at the bottom of an exception-group tree.

    Nurseries wrap what fails in them; code that translates errors at a boundary looks at the
    leaves. Iterative, so a deep tree cannot exhaust the stack.

    Args:
        exc: an exception or exception group.

    Returns:
        An iterator of the leaves (*exc* itself if it is no group).
    """
    stack = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        else:
            yield current


def single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """Find the one exception *group* wraps, however deeply nested.

    Args:
        group: an exception group.

    Returns:
        That exception, or None if *group* wraps several.
    """
    leaves = list(exception_leaves(group))
    return leaves[0] if len(leaves) == 1 else None
