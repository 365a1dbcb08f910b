"""Who the client is behind a proxy: X-Forwarded-For, RFC 7239 Forwarded, the trusted set (pure)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionos._forwarded import (
    ForwardedClient,
    TrustedProxies,
    forwarded_client,
    parse_forwarded,
    split_entries,
)
from trionos._http import Headers

TRUSTED = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8", "127.0.0.1"])
PROXY = ("10.0.0.1", 50000)


def client(
    headers: list[tuple[str, str]], peer: tuple[str, int] | None = PROXY, secure: bool = False
) -> ForwardedClient:
    """The client forwarded_client sees for these headers from *peer*."""
    return forwarded_client(peer, TRUSTED, Headers(headers), secure=secure)


def test_split_entries_takes_uvicorns_string_or_a_list() -> None:
    """A comma-separated string and a list (of such strings) give the same entries."""
    assert split_entries("127.0.0.1, 10.0.0.0/8,") == ("127.0.0.1", "10.0.0.0/8")
    assert split_entries(["127.0.0.1", "10.0.0.0/8, ::1"]) == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert split_entries("") == ()


def test_trusted_set_holds_addresses_and_networks() -> None:
    """Addresses, networks and IPv4-mapped IPv6 peers match; names and None do not, unless '*'."""
    assert TRUSTED.trusts("10.200.3.4") and TRUSTED.trusts("fd12::1") and TRUSTED.trusts("127.0.0.1")
    assert TRUSTED.trusts("::ffff:10.1.2.3")
    assert not TRUSTED.trusts("127.0.0.2") and not TRUSTED.trusts("192.0.2.1")
    assert not TRUSTED.trusts(None) and not TRUSTED.trusts("_hidden") and not TRUSTED.trusts("unknown")
    everyone = TrustedProxies.parse(["*"])
    assert everyone.trusts(None) and everyone.trusts("192.0.2.1")
    assert not TrustedProxies.parse([]).trusts("127.0.0.1")
    with pytest.raises(ValueError, match=re.escape("got 'proxy.example'")):
        TrustedProxies.parse(["proxy.example"])


def test_untrusted_peer_is_the_client_whatever_it_says() -> None:
    """From a peer outside the trusted set every forwarding header is ignored."""
    forged = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("Forwarded", "for=5.6.7.8;proto=https"),
        ("X-Forwarded-Proto", "https"),
    ]
    assert client(forged, peer=("192.0.2.9", 4444)) == ForwardedClient("192.0.2.9", 4444, "http")
    assert client(forged, peer=None) == ForwardedClient(None, 0, "http")


def test_x_forwarded_for_right_most_untrusted_entry() -> None:
    """The client is the right-most entry that is not a trusted proxy; the scheme is X-Forwarded-Proto's."""
    headers = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.9"), ("X-Forwarded-Proto", "https")]
    assert client(headers) == ForwardedClient("198.51.100.7", 0, "https", forwarded=True)
    assert client(headers).address == ("198.51.100.7", 0)


def test_all_trusted_entries_give_the_left_most_one() -> None:
    """When every entry is a trusted proxy, the left-most one is the client."""
    assert client([("X-Forwarded-For", "10.1.1.1, 10.2.2.2")]).host == "10.1.1.1"


def test_repeated_x_forwarded_for_lines_join_in_order() -> None:
    """Two header lines read as one list, the later line to the right."""
    headers = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")]
    assert client(headers).host == "198.51.100.7"


def test_x_forwarded_for_with_ports_and_ipv6() -> None:
    """Entries may carry a port, IPv6 ones in brackets; addresses come out canonical."""
    assert client([("X-Forwarded-For", "198.51.100.7:4711")]).address == ("198.51.100.7", 4711)
    assert client([("X-Forwarded-For", "[2001:DB8:0::1]:80")]).address == ("2001:db8::1", 80)
    assert client([("X-Forwarded-For", "2001:db8::1")]).address == ("2001:db8::1", 0)


def test_empty_x_forwarded_for_leaves_the_peer() -> None:
    """An empty header names nobody: the trusted peer itself is the client."""
    assert client([("X-Forwarded-For", " , ")]) == ForwardedClient(*PROXY, "http")


def test_trusted_peer_without_headers_is_the_client() -> None:
    """A trusted peer that forwards nothing is itself the client (TLS to it is https)."""
    assert client([], secure=True) == ForwardedClient(*PROXY, "https")


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [
        ("https", "https"),
        ("HTTP", "http"),
        ("wss", "https"),
        ("ws", "http"),
        ("gopher", "http"),
        ("http, https", "https"),
    ],
)
def test_x_forwarded_proto_values(proto: str, scheme: str) -> None:
    """ws/wss read as http/https, the right-most value counts, and an unknown value is ignored."""
    assert client([("X-Forwarded-Proto", proto)]).scheme == scheme


def test_parse_forwarded_quoting_and_case() -> None:
    """Elements split on commas and pairs on semicolons outside quotes; names lower-case, values unquoted."""
    header = 'For="[2001:db8:cafe::17]:4711";Proto=https, for=192.0.2.60;by=203.0.113.43, for="a\\"b,c", junk'
    assert parse_forwarded(header) == [
        {"for": "[2001:db8:cafe::17]:4711", "proto": "https"},
        {"for": "192.0.2.60", "by": "203.0.113.43"},
        {"for": 'a"b,c'},
        {},
    ]


def test_forwarded_ipv6_port_and_proto() -> None:
    """RFC 7239: the chosen element gives the address, the port and the scheme."""
    headers = [("Forwarded", 'for=192.0.2.43, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3')]
    assert client(headers) == ForwardedClient("2001:db8:cafe::17", 4711, "https", forwarded=True)


@pytest.mark.parametrize("identifier", ["_hidden", "unknown", "_SEVKISEK"])
def test_forwarded_obfuscated_identifiers_are_the_client(identifier: str) -> None:
    """An obfuscated identifier or ``unknown`` is never a trusted proxy: it is the client, as given."""
    headers = [("Forwarded", f'for=198.51.100.1, for="{identifier}:_port", for=10.0.0.2')]
    assert client(headers) == ForwardedClient(identifier, 0, "http", forwarded=True)


def test_x_forwarded_for_wins_over_forwarded() -> None:
    """Behind nginx (X-Forwarded-For only), a client's own Forwarded header is ignored."""
    headers = [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")]
    assert client(headers).host == "198.51.100.7"


def test_an_unbalanced_quote_cannot_swallow_the_proxys_entry() -> None:
    """A client's unterminated quote garbles only its own part of Forwarded, not the proxy's entry."""
    headers = [("Forwarded", 'for="6.6.6.6'), ("Forwarded", "for=198.51.100.7")]
    assert client(headers).host == "198.51.100.7"


# -- the property: a forged entry from an untrusted client never wins ------------------------------

untrusted_ips = st.ip_addresses().filter(lambda ip: not TRUSTED.trusts(str(ip)))
trusted_ips = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="fd00::/8"),
    st.just(ipaddress.ip_address("127.0.0.1")),
)
# Whatever a client may write into a header line: anything printable, commas and quotes included.
forged_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def _node(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f'"[{ip}]"' if ip.version == 6 else str(ip)


def _canonical(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """How the address reads in req.remote: an IPv4-mapped IPv6 address as the IPv4 one."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


@given(forged=forged_text, real=untrusted_ips, hops=st.lists(trusted_ips, max_size=3))
def test_forged_x_forwarded_for_never_wins(
    forged: str, real: ipaddress.IPv4Address | ipaddress.IPv6Address, hops: list[ipaddress.IPv4Address]
) -> None:
    """Whatever the client put in X-Forwarded-For, the trusted chain's view of it is the address."""
    # Each proxy appends the address it got the request from: the client, then the proxies.
    chain = ", ".join(str(ip) for ip in [real, *hops])
    headers = [("X-Forwarded-For", f"{forged}, {chain}" if forged else chain)]
    assert client(headers) == ForwardedClient(_canonical(real), 0, "http", forwarded=True)


@given(forged=forged_text, real=untrusted_ips, hops=st.lists(trusted_ips, max_size=3))
def test_forged_forwarded_never_wins(
    forged: str, real: ipaddress.IPv4Address | ipaddress.IPv6Address, hops: list[ipaddress.IPv4Address]
) -> None:
    """Whatever the client put in Forwarded (quotes, commas, semicolons), the trusted chain's view wins."""
    chain = ", ".join(f"for={_node(ip)};proto=https" for ip in [real, *hops])
    headers = [("Forwarded", forged), ("Forwarded", chain)]
    assert client(headers) == ForwardedClient(_canonical(real), 0, "https", forwarded=True)


@given(
    peer=untrusted_ips,
    headers=st.lists(
        st.tuples(st.sampled_from(["X-Forwarded-For", "Forwarded", "X-Forwarded-Proto"]), forged_text),
        max_size=4,
    ),
)
def test_untrusted_peer_headers_never_matter(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, headers: list[tuple[str, str]]
) -> None:
    """From an untrusted peer, no combination of forwarding headers changes the client."""
    assert client(headers, peer=(str(peer), 1234)) == ForwardedClient(str(peer), 1234, "http")


@given(st.text(max_size=60))
def test_parsers_take_any_text(value: str) -> None:
    """No header value makes the parsers raise."""
    parse_forwarded(value)
    client([("X-Forwarded-For", value), ("X-Forwarded-Proto", value)])
    client([("Forwarded", value)])
