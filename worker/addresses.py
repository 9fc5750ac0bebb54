"""Which IP addresses are public: the allow-list the SSRF guard (`worker.ssrf`) decides by.

- IPv4: public unicast, i.e. outside every block of the IANA IPv4 special-purpose registry that
  is not globally reachable, and outside multicast, reserved and broadcast.
- IPv6: only global unicast (`2000::/3`), minus the blocks of the IANA IPv6 special-purpose
  registry. Addresses that carry an IPv4 address inside (IPv4-mapped, IPv4-compatible,
  IPv4-translated, NAT64, 6to4, Teredo) are judged by that IPv4 address; the forms that are not
  globally routable at all are refused whatever they carry.

Not `ipaddress.is_global`: in Python 3.11.7 it calls `::/96`, `::ffff:0:0:0/96` and
`fec0::/10` global, so `[::127.0.0.1]`, `[::ffff:0:7f00:1]` and `[fec0::1]` would pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_net = ipaddress.ip_network
_V4 = ipaddress.IPv4Address

# IPv4 blocks that are not public unicast, each with what a refusal calls it.
_V4_REFUSED: tuple[tuple[IPNetwork, str], ...] = (
    (_net("0.0.0.0/8"), "a 'this network' (0.0.0.0/8) address"),
    (_net("10.0.0.0/8"), "a private address"),
    (_net("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_net("127.0.0.0/8"), "a loopback address"),
    (_net("169.254.0.0/16"), "a link-local (cloud metadata) address"),
    (_net("172.16.0.0/12"), "a private address"),
    (_net("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"),
    (_net("192.0.2.0/24"), "a documentation address (TEST-NET-1)"),
    (_net("192.88.99.0/24"), "a 6to4 relay anycast address (deprecated)"),
    (_net("192.168.0.0/16"), "a private address"),
    (_net("198.18.0.0/15"), "a benchmarking address"),
    (_net("198.51.100.0/24"), "a documentation address (TEST-NET-2)"),
    (_net("203.0.113.0/24"), "a documentation address (TEST-NET-3)"),
    (_net("224.0.0.0/4"), "a multicast address"),
    (_net("255.255.255.255/32"), "a broadcast address"),
    (_net("240.0.0.0/4"), "a reserved address"),
)

GLOBAL_UNICAST = _net("2000::/3")
# IPv6 special-purpose blocks inside 2000::/3 (6to4 and Teredo are judged by their IPv4 first).
_V6_REFUSED_INSIDE: tuple[tuple[IPNetwork, str], ...] = (
    (_net("2001:db8::/32"), "a documentation address (2001:db8::/32)"),
    (_net("2001::/23"), "an IETF protocol assignment (2001::/23)"),
    (_net("3fff::/20"), "a documentation address (3fff::/20)"),
)
# Named blocks outside 2000::/3, so a refusal says more than "not global unicast".
_V6_NAMED_OUTSIDE: tuple[tuple[IPNetwork, str], ...] = (
    (_net("::/128"), "an unspecified address"),
    (_net("::1/128"), "a loopback address"),
    (_net("100::/64"), "a discard-only address"),
    (_net("fc00::/7"), "a unique-local address"),
    (_net("fe80::/10"), "a link-local address"),
    (_net("fec0::/10"), "a site-local address (deprecated)"),
    (_net("ff00::/8"), "a multicast address"),
)


def _low32(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return (_V4(int(address) & 0xFFFFFFFF),)


def _mapped(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return (address.ipv4_mapped,) if address.ipv4_mapped else ()


def _sixtofour(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return (address.sixtofour,) if address.sixtofour else ()


def _teredo(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return address.teredo or ()  # (server, client): both must be public


Extract = Callable[[ipaddress.IPv6Address], tuple[ipaddress.IPv4Address, ...]]
# IPv6 forms that carry an IPv4 address: (block, name, where the IPv4 is, globally routable).
# The routable ones pass when their IPv4 address does; the others are refused in any case.
# (`::` and `::1`, inside `::/96`, are caught before this table.)
EMBEDDED: tuple[tuple[IPNetwork, str, Extract, bool], ...] = (
    (_net("::ffff:0:0/96"), "IPv4-mapped", _mapped, True),
    (_net("::ffff:0:0:0/96"), "IPv4-translated", _low32, False),
    (_net("::/96"), "IPv4-compatible", _low32, False),
    (_net("64:ff9b::/96"), "NAT64", _low32, True),
    (_net("64:ff9b:1::/48"), "local-use NAT64", lambda _: (), False),
    (_net("2002::/16"), "6to4", _sixtofour, True),
    (_net("2001::/32"), "Teredo", _teredo, True),
)


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address) or int(address) <= 1:
        return ()
    for network, _name, extract, _routable in EMBEDDED:
        if address in network:
            return extract(address)
    return ()


def _v4_reason(address: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_REFUSED:
        if address in network:
            return reason
    return None


def _embedded_reason(address: ipaddress.IPv6Address) -> str | None:
    """Why an address of an IPv4-carrying form is refused; "" when it passes; None when it is
    not of such a form."""
    for network, name, extract, routable in EMBEDDED:
        if address not in network:
            continue
        inner = extract(address)
        article = "an" if name[0] in "aeiouAEIOU" else "a"
        for v4 in inner:
            reason = _v4_reason(v4)
            if reason is not None:
                return f"{article} {name} address of {v4}, {reason}"
        if not routable:
            carried = f" of {inner[0]}" if inner else ""
            return f"{article} {name} address{carried}, a form that is not globally routable"
        return ""
    return None


def _v6_reason(address: ipaddress.IPv6Address) -> str | None:
    for network, reason in _V6_NAMED_OUTSIDE[:2]:  # `::` and `::1` before `::/96`
        if address in network:
            return reason
    embedded = _embedded_reason(address)
    if embedded is not None:
        return embedded or None
    if address in GLOBAL_UNICAST:
        return next((reason for network, reason in _V6_REFUSED_INSIDE if address in network), None)
    for network, reason in _V6_NAMED_OUTSIDE:
        if address in network:
            return reason
    return "not a global unicast address (outside 2000::/3)"


def public_refusal(address: IPAddress) -> str | None:
    """Why `address` is not public (e.g. "a loopback address"), or None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_reason(address)
    return _v6_reason(address)
