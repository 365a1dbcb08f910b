"""Who the client is behind a reverse proxy: ``X-Forwarded-For``, RFC 7239 ``Forwarded``.

Pure: no I/O, never imports trio. The server asks :func:`forwarded_client` once per connection,
with the peer's address, the proxies it trusts (:class:`TrustedProxies`, parsed from
:attr:`ServerOptions.forwarded_allow_ips <trionos.ServerOptions.forwarded_allow_ips>`) and the
request headers.

The rules (uvicorn's and gunicorn's, extended to RFC 7239):

- From a peer that is not a trusted proxy, every forwarding header is ignored: the client is the
  peer. Anyone can send ``X-Forwarded-For``; only a trusted proxy's word counts.
- From a trusted proxy, the client is the **right-most entry that is not itself a trusted
  proxy**. Each proxy appends the address it received the request from, so the entries to the
  right of a trusted proxy's own entry were written by trusted proxies; anything to the left of
  the first untrusted entry may have been written by the client and is never used. When every
  entry is trusted, the left-most one is the client.
- ``X-Forwarded-For`` is read when present (nginx, HAProxy, Caddy and the cloud load balancers
  send it); ``Forwarded`` only when it is absent. A proxy that sets only ``Forwarded`` passes a
  client's own ``X-Forwarded-For`` through unchanged, so behind one, have it remove that header
  (``docs/deploy.md`` says how).
- ``Forwarded`` entries may quote their values, put IPv6 addresses in brackets, carry ports, or
  name the client with an obfuscated identifier (``_hidden``) or ``unknown``; such an identifier
  is the client's address as given (it is never a trusted proxy).
- The scheme (``http`` or ``https``) comes from the chosen ``Forwarded`` entry's ``proto``, or from
  ``X-Forwarded-Proto`` (its right-most value: the one the nearest proxy set; ``ws``/``wss`` read
  as ``http``/``https``). An unknown value is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["ForwardedClient", "TrustedProxies", "forwarded_client", "parse_forwarded"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _network(entry: str) -> _Network:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(
            f"forwarded_allow_ips entries must be IP addresses, networks (10.0.0.0/8) or '*', got {entry!r}"
        ) from None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def split_entries(spec: str | Iterable[str]) -> tuple[str, ...]:
    """The entries of a ``forwarded_allow_ips`` value: a comma-separated string or a list.

    Args:
        spec: ``"127.0.0.1, 10.0.0.0/8"``, ``"*"``, or a list of such entries.

    Returns:
        The entries, stripped, without empty ones.
    """
    parts = spec.split(",") if isinstance(spec, str) else [p for item in spec for p in item.split(",")]
    return tuple(part.strip() for part in parts if part.strip())


@attrs.frozen
class TrustedProxies:
    """The peers whose forwarding headers are believed.

    Attributes:
        everyone: ``*`` was listed: every peer is trusted, with an IP address or not (a Unix
            socket's peer has none).
        networks: the trusted addresses and networks (an address is a network of one).
    """

    everyone: bool = False
    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Parse uvicorn's syntax: IP addresses, networks in CIDR notation, and ``*`` for any.

        Args:
            entries: the entries (see :func:`split_entries`).

        Returns:
            The trusted set.

        Raises:
            ValueError: an entry is neither an address, a network nor ``*``.
        """
        entries = tuple(entries)
        if "*" in entries:
            return cls(everyone=True)
        return cls(networks=tuple(_network(entry) for entry in entries))

    def trusts(self, host: str | None) -> bool:
        """Whether *host* is a trusted proxy.

        Args:
            host: an IP address, or None for a peer without one (a Unix socket, an in-memory
                connection), or an identifier from a ``Forwarded`` header.

        Returns:
            True when ``*`` was listed, or *host* is an IP address inside a trusted network.
        """
        if self.everyone:
            return True
        ip = None if host is None else _ip(host)
        return ip is not None and any(ip in network for network in self.networks)


@attrs.frozen
class ForwardedClient:
    """The client a request comes from, as far as the trusted proxies say.

    Attributes:
        host: its address (an IP address, or an identifier a ``Forwarded`` header gave), or None
            when unknown (an in-memory connection).
        port: its port, or 0 when the proxy did not say.
        scheme: ``"http"`` or ``"https"``: what the client used to reach the first proxy.
        forwarded: True when the address came from a forwarding header.
    """

    host: str | None
    port: int
    scheme: str
    forwarded: bool = False

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)``, or None when the host is unknown."""
        return None if self.host is None else (self.host, self.port)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, escaped = value[1:-1], False
        out: list[str] = []
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split *text* at each *separator* outside a quoted string, scanning from the right.

    From the right, because the right end is what the trusted proxies wrote: a client that sends
    an unbalanced quote in its own ``Forwarded`` header garbles only the part to its left, never
    the entries appended after it.
    """
    parts: list[str] = []
    end = len(text)
    quoted = False
    index = len(text) - 1
    while index >= 0:
        char = text[index]
        if char == '"':
            backslashes = 0
            while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:  # not an escaped quote
                quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[index + 1 : end])
            end = index
        index -= 1
    parts.append(text[:end])
    parts.reverse()
    return parts


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of an RFC 7239 ``Forwarded`` header, left to right.

    Each element is a mapping of its lower-cased parameter names to their unquoted values
    (``for``, ``by``, ``host``, ``proto``). A malformed pair (no ``=``) is skipped; an element
    without pairs is kept as an empty mapping, so that positions still count.

    Args:
        value: the header's value (several header lines joined by ``", "``).

    Returns:
        One mapping per element.
    """
    elements = []
    for element in _split_outside_quotes(value, ","):
        pairs: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep and name.strip():
                pairs[name.strip().lower()] = _unquote(raw)
        elements.append(pairs)
    return elements


def _node(node: str) -> tuple[str, int]:
    """A ``Forwarded`` node (``192.0.2.1:80``, ``[2001:db8::1]:80``, ``_hidden``) -> host, port.

    An IP address is written the canonical way (``2001:DB8:0::1`` -> ``2001:db8::1``), so that one
    client is one key for the per-address limit however a proxy spells it.
    """
    node = node.strip()
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    ip = _ip(host)
    return str(ip) if ip is not None else host, int(port) if port.isdigit() and len(port) <= 5 else 0


def _x_forwarded_for(value: str) -> list[tuple[str, int]]:
    # Some proxies add the port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``), as in Forwarded.
    return [_node(entry) for entry in value.split(",") if entry.strip()]


def _pick(entries: list[tuple[str, int]], trusted: TrustedProxies) -> int | None:
    """The index of the right-most untrusted entry (or the left-most one when all are trusted)."""
    if not entries:
        return None
    for index in range(len(entries) - 1, -1, -1):
        if not trusted.trusts(entries[index][0]):
            return index
    return 0


def forwarded_client(
    peer: tuple[str, int] | None,
    trusted: TrustedProxies,
    headers: Mapping[str, str],
    *,
    secure: bool = False,
) -> ForwardedClient:
    """Who the client is: the peer, or what a trusted proxy says.

    Args:
        peer: the connection's peer ``(host, port)``, or None when it has no IP address.
        trusted: the trusted proxies.
        headers: the request headers, with case-insensitive lookups and repeated headers joined
            by ``", "`` (:class:`trionos.Request`'s ``headers``).
        secure: whether the connection to the peer is TLS.

    Returns:
        The client: the peer itself unless the peer is trusted and said otherwise.
    """
    scheme = "https" if secure else "http"
    direct = ForwardedClient(None if peer is None else peer[0], 0 if peer is None else peer[1], scheme)
    if not trusted.trusts(direct.host):
        return direct
    proto_header = headers.get("x-forwarded-proto")
    if proto_header is not None:
        last = proto_header.split(",")[-1].strip().lower()
        scheme = _SCHEMES.get(last, scheme)
    xff = headers.get("x-forwarded-for")
    if xff is not None:
        entries = _x_forwarded_for(xff)
        chosen = _pick(entries, trusted)
        if chosen is None:
            return attrs.evolve(direct, scheme=scheme)
        host, port = entries[chosen]
        return ForwardedClient(host, port, scheme, forwarded=True)
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        elements = [element for element in parse_forwarded(forwarded) if "for" in element]
        entries = [_node(element["for"]) for element in elements]
        chosen = _pick(entries, trusted)
        if chosen is None:
            return attrs.evolve(direct, scheme=scheme)
        proto = elements[chosen].get("proto", "").lower()
        host, port = entries[chosen]
        return ForwardedClient(host, port, _SCHEMES.get(proto, scheme), forwarded=True)
    return attrs.evolve(direct, scheme=scheme)
