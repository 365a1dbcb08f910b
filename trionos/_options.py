"""Settings as frozen values: one home for each option group, pure (never imports trio).

:class:`ServerOptions` holds what :func:`trionos.serve` and the test kit's servers take,
:class:`ClientOptions` what :func:`trionos.connect` and the test kit's clients take, and
:class:`Heartbeat` the keepalive schedule both share. Each option is documented once, on its value
object; the functions that take an options object also take the same settings as keyword
arguments (:func:`resolve` turns either form into the value, and refuses both at once).

The attrs validators here are the package's one check for "a positive number of seconds" and "a
positive whole number", so that every setting says the same thing when it is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict, TypeVar

import attrs

from ._deflate import check_compression
from ._forwarded import TrustedProxies, split_entries
from ._inflation import DEFAULT_INFLATE_RATE

__all__ = [
    "ClientOptionKeywords",
    "ClientOptions",
    "Heartbeat",
    "ServerOptionKeywords",
    "ServerOptions",
    "positive_int",
    "positive_rate",
    "positive_seconds",
    "resolve",
]


def _owner(instance: object) -> str:
    return type(instance).__name__


def _positive_number(instance: object, attribute: attrs.Attribute[Any], value: object, unit: str) -> None:
    """*value* is a positive, finite number (of *unit*), or the error saying what it is not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{_owner(instance)} {attribute.name} must be a number {unit}, got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(
            f"{_owner(instance)} {attribute.name} must be a positive, finite number {unit}, got {value!r}"
        )


def positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: *value* is a positive, finite number of seconds.

    Args:
        instance: the object being built (its class names the setting in the message).
        attribute: the field being checked.
        value: the value given.

    Raises:
        TypeError: *value* is not a number (``bool`` is not one).
        ValueError: *value* is zero, negative, infinite or NaN.
    """
    _positive_number(instance, attribute, value, "of seconds")


def positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: *value* is a whole number of at least 1.

    Args:
        instance: the object being built (its class names the setting in the message).
        attribute: the field being checked.
        value: the value given.

    Raises:
        TypeError: *value* is not an ``int`` (``bool`` is not one).
        ValueError: *value* is less than 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{_owner(instance)} {attribute.name} must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"{_owner(instance)} {attribute.name} must be at least 1, got {value!r}")


def positive_rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: *value* is a positive, finite rate (its errors as :func:`positive_seconds`)."""
    _positive_number(instance, attribute, value, "per second")


def _optional_positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        positive_int(instance, attribute, value)


def _compression(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    check_compression(value)


def _trusted_proxies(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    TrustedProxies.parse(value)


def _heartbeat(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Heartbeat):
        raise TypeError(f"{_owner(instance)} heartbeat must be a Heartbeat or None, got {value!r}")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"expected a list of strings, got the single string {value!r}")
    return tuple(value)


def _headers(value: Iterable[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return () if value is None else tuple((name, field) for name, field in value)


def _origins(value: Iterable[str | None] | None) -> frozenset[str | None] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"origins must be a list of origins, got the single string {value!r}")
    return frozenset(value)


@attrs.frozen
class Heartbeat:
    """Protocol-level keepalive settings for a connection.

    Every ``interval`` seconds the endpoint sends a WebSocket ping. A connection on which nothing
    arrives for ``timeout`` seconds is considered dead: its handler is cancelled, a close frame
    with code 1011 is attempted without waiting, and the TCP connection is closed at once. Pass
    ``heartbeat=None`` (in :class:`~trionos.ServerOptions` or :class:`~trionos.ClientOptions`) to
    switch heartbeats off. See ``docs/heartbeats.md``.

    A handler busy elsewhere never makes a healthy peer look dead: what the peer sends is read
    for it in the meantime. Only while the messages read ahead fill the connection's queue (the
    application has not taken them) is reading paused, and the idle clock with it.

    Attributes:
        interval: seconds between pings (30).
        timeout: seconds of silence after which the peer is dead (60).

    Raises:
        TypeError: a setting is not a number.
        ValueError: a setting is not a positive, finite number of seconds.
    """

    interval: float = attrs.field(default=30.0, validator=positive_seconds)
    timeout: float = attrs.field(default=60.0, validator=positive_seconds)


_DEFAULT_HEARTBEAT = Heartbeat()


@attrs.frozen(kw_only=True)
class ServerOptions:
    """How a server treats its connections: its limits, timeouts, heartbeat and compression.

    ``trionos.serve(8080, handler, options=ServerOptions(max_connections=500))``, or the same
    settings as keyword arguments: ``trionos.serve(8080, handler, max_connections=500)``. The value
    is frozen: derive another with ``attrs.evolve(options, heartbeat=None)``. Each limit says what
    happens at its bound.

    Attributes:
        origins: when given, upgrades whose ``Origin`` header is not listed get 403 (list ``None``
            to admit clients that send no ``Origin``, such as non-browser clients). ``None`` (the
            default) admits every origin.
        heartbeat: the ping schedule and the silence after which a client is dead (ping every
            30 s, close after 60 s); ``None`` switches it off.
        max_message_size: the largest message received, in bytes (1 MiB); a larger one closes
            the connection with 1009.
        max_head_size: the largest request head, in bytes (16 KiB); a larger one is answered with
            431.
        handshake_timeout: seconds a client has to send its request head (10); a slower one is
            dropped.
        max_connections: open connections (10,000); further ones are answered with 503.
        max_connections_per_address: open connections from one client address; further ones
            are answered with 503 and counted as
            :attr:`RefusalReason.PER_ADDRESS <trionos.RefusalReason.PER_ADDRESS>`. ``None`` (the
            default): no per-address limit, since a load test from one machine or an office
            behind one NAT is one address; ``docs/deploy.md`` recommends a value for a public
            server. The address is the forwarded client's for a trusted proxy (see
            *forwarded_allow_ips*), so for those connections the limit applies once the request
            head is read.
        close_timeout: seconds a closing handshake may take (5), also under a shutdown; then the
            connection is cut.
        max_outbox_bytes: bytes queued per connection while its socket is full (1 MiB); see the
            hub's :class:`~trionos.SlowClientPolicy` for what happens beyond it.
        message_queue_size: messages read ahead for a handler that is not receiving (1); when that
            many wait, the connection stops reading (TCP backpressure), and the idle clock stops
            too. A handler in ``recv`` reads and parses in its own task, with nothing held.
        compression: ``"deflate"`` offers permessage-deflate (RFC 7692) without context takeover
            on either side, so a broadcast is compressed once for all compressed recipients and an
            idle connection keeps no zlib state; ``None`` (the default, which keeps idle
            connections smallest) offers nothing. Messages under 64 bytes go out uncompressed.
        compression_context_takeover: with ``compression="deflate"``, negotiate context takeover
            on both sides (False, the default): each connection keeps one compressor and one
            decompressor for its life (windows of 4 KiB), so a stream of similar messages
            compresses better and faster, at about 30 KiB of zlib state per connection from the
            handshake on (as websockets' default compression), and a broadcast is compressed once
            per recipient instead of once. docs/performance.md says which to pick when.
        forwarded_allow_ips: the reverse proxies whose ``X-Forwarded-For``, ``Forwarded`` and
            ``X-Forwarded-Proto`` headers are believed (uvicorn's setting and syntax): IP
            addresses and networks, as a list or one comma-separated string
            (``"10.0.0.0/8,192.168.1.1"``), or ``"*"`` for every peer (also a Unix socket's).
            A request from one of them takes its :attr:`Request.remote <trionos.Request.remote>`
            and :attr:`Request.scheme <trionos.Request.scheme>` from those headers; from anyone
            else the headers are ignored. The loopback addresses by default (``127.0.0.1,::1``:
            a proxy on the same host); ``()`` trusts no one. See ``docs/deploy.md``.
        max_inflate_rate: with ``compression="deflate"``, the bytes per second that inflation
            may add on one connection (32 MiB/s, in bursts of twice that): the messages' size
            minus the compressed bytes they came in. A connection over it stops reading until
            it is back within it (TCP pushes back on the peer) and is counted in
            :attr:`Metrics.inflation_waits <trionos.Metrics.inflation_waits>`; docs/bounds.md
            says why.
        max_ping_rate: the pings per second a client may send on average (2): protocol pings,
            and text ``"ping"`` where it is answered. Beyond the burst a text ping gets no pong;
            each refused ping is counted in :attr:`Metrics.rate_limited
            <trionos.Metrics.rate_limited>`, and a client that sends ``max_ping_burst`` more in a
            row while refused is closed with 1008.
        max_ping_burst: the pings a client may send at once after a quiet spell (20), and the
            refused pings in a row that close it.
        access_log: write one INFO line to the ``trionos.access`` logger per HTTP request and per
            WebSocket session when it ends (False; the ``trionos`` command turns it on).

    Raises:
        TypeError: a setting has the wrong type (e.g. a string for a number).
        ValueError: a setting is out of range (e.g. a size below 1, an unknown compression).
    """

    origins: frozenset[str | None] | None = attrs.field(default=None, converter=_origins)
    heartbeat: Heartbeat | None = attrs.field(default=_DEFAULT_HEARTBEAT, validator=_heartbeat)
    max_message_size: int = attrs.field(default=1024 * 1024, validator=positive_int)
    max_head_size: int = attrs.field(default=16 * 1024, validator=positive_int)
    handshake_timeout: float = attrs.field(default=10.0, validator=positive_seconds)
    max_connections: int = attrs.field(default=10_000, validator=positive_int)
    max_connections_per_address: int | None = attrs.field(default=None, validator=_optional_positive_int)
    close_timeout: float = attrs.field(default=5.0, validator=positive_seconds)
    max_outbox_bytes: int = attrs.field(default=1024 * 1024, validator=positive_int)
    message_queue_size: int = attrs.field(default=1, validator=positive_int)
    compression: str | None = attrs.field(default=None, validator=_compression)
    compression_context_takeover: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    forwarded_allow_ips: tuple[str, ...] = attrs.field(
        default=("127.0.0.1", "::1"), converter=split_entries, validator=_trusted_proxies
    )
    max_inflate_rate: int = attrs.field(default=DEFAULT_INFLATE_RATE, validator=positive_int)
    max_ping_rate: float = attrs.field(default=2.0, validator=positive_rate)
    max_ping_burst: int = attrs.field(default=20, validator=positive_int)
    access_log: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


@attrs.frozen(kw_only=True)
class ClientOptions:
    """How a client connection behaves: what it asks for, its timeouts, limits and heartbeat.

    ``trionos.connect(url, options=ClientOptions(connect_timeout=3))``, or the same settings as
    keyword arguments: ``trionos.connect(url, connect_timeout=3)``. The value is frozen: derive
    another with ``attrs.evolve(options, heartbeat=None)``.

    Attributes:
        subprotocols: the subprotocols offered, in order of preference (none).
        extra_headers: more ``(name, value)`` headers for the upgrade request (none).
        connect_timeout: seconds that TCP, TLS and the upgrade together may take (10); then
            :exc:`~trionos.ConnectTimeout` is raised.
        heartbeat: the ping schedule and the silence after which the server is dead (ping every
            30 s, dead after 60 s; the test kit's clients default to ``None``); ``None`` switches
            it off. A dead server ends the ``async with`` block with
            ``ConnectionClosed(1011, "heartbeat timeout ...")``.
        max_message_size: the largest message received, in bytes (1 MiB); a larger one closes
            the connection with 1009.
        close_timeout: seconds the closing handshake may take (5); then the connection is cut.
        max_outbox_bytes: bytes queued while the socket is full (1 MiB); ``send`` waits beyond it.
        message_queue_size: messages read ahead while nobody receives: at most 64 KiB of
            messages, or this many if it is more than 256; then the connection stops reading (TCP
            backpressure).
        compression: ``"deflate"`` offers permessage-deflate (RFC 7692), and the server decides
            whether and how it is used (context takeover included); ``None`` (the default) offers
            nothing.

    Raises:
        TypeError: a setting has the wrong type (e.g. one string for ``subprotocols``).
        ValueError: a setting is out of range (e.g. a size below 1, an unknown compression).
    """

    subprotocols: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    extra_headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    connect_timeout: float = attrs.field(default=10.0, validator=positive_seconds)
    heartbeat: Heartbeat | None = attrs.field(default=_DEFAULT_HEARTBEAT, validator=_heartbeat)
    max_message_size: int = attrs.field(default=1024 * 1024, validator=positive_int)
    close_timeout: float = attrs.field(default=5.0, validator=positive_seconds)
    max_outbox_bytes: int = attrs.field(default=1024 * 1024, validator=positive_int)
    message_queue_size: int = attrs.field(default=1, validator=positive_int)
    compression: str | None = attrs.field(default=None, validator=_compression)


class ServerOptionKeywords(TypedDict, total=False):
    """The keyword form of :class:`~trionos.ServerOptions` (for ``**keywords`` annotations)."""

    origins: Iterable[str | None] | None
    heartbeat: Heartbeat | None
    max_message_size: int
    max_head_size: int
    handshake_timeout: float
    max_connections: int
    max_connections_per_address: int | None
    close_timeout: float
    max_outbox_bytes: int
    message_queue_size: int
    compression: str | None
    compression_context_takeover: bool
    forwarded_allow_ips: str | Iterable[str]
    max_inflate_rate: int
    max_ping_rate: float
    max_ping_burst: int
    access_log: bool


class ClientOptionKeywords(TypedDict, total=False):
    """The keyword form of :class:`~trionos.ClientOptions` (for ``**keywords`` annotations)."""

    subprotocols: Iterable[str]
    extra_headers: Iterable[tuple[str, str]] | None
    connect_timeout: float
    heartbeat: Heartbeat | None
    max_message_size: int
    close_timeout: float
    max_outbox_bytes: int
    message_queue_size: int
    compression: str | None


OptionsT = TypeVar("OptionsT", ServerOptions, ClientOptions)


def resolve(
    options: OptionsT | None,
    keywords: Mapping[str, Any],
    *,
    base: OptionsT,
    caller: str,
) -> OptionsT:
    """The options a call asked for: *options*, or *base* changed by the option *keywords*.

    Args:
        options: the ``options=`` argument, or None.
        keywords: the option keyword arguments the call received.
        base: the defaults the keywords change (``ServerOptions()`` or ``ClientOptions()``, or the
            test kit's client defaults).
        caller: the public function's name, for the error messages.

    Returns:
        The options value to use.

    Raises:
        TypeError: both *options* and keywords were given, or a keyword is not an option of
            *base*'s class (the same error Python raises for an unknown keyword argument).
        ValueError: a keyword's value is out of range (from the value object's validators).
    """
    known = attrs.fields_dict(type(base))
    unknown = sorted(name for name in keywords if name not in known)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    if options is None:
        return attrs.evolve(base, **keywords) if keywords else base
    if keywords:
        raise TypeError(
            f"{caller}() takes options= or the option keyword arguments, not both: "
            f"got options= and {', '.join(sorted(keywords))}"
        )
    if not isinstance(options, type(base)):
        raise TypeError(f"{caller}() options must be a {type(base).__name__}, got {options!r}")
    return options
