"""SSRF guard: refuse URLs that reach non-public addresses; connect only to the address checked.

Two layers (engineering.md §4.1):

- `check_url` at submission time: the URL's shape, and IP-literal hosts against the address rules.
- `PinnedTransport` at send time, on every request: resolve A and AAAA once (`resolve_safe`),
  refuse if any answer is not public, then connect to the first checked address while the
  `Host` header, TLS SNI and certificate verification stay on the hostname. The second
  resolution a DNS-rebinding attacker hopes for never happens.

Defence in depth still applies: run receipt workers in an egress-restricted network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from worker.errors import UnsafeUrlError, WebhookUnavailableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# `socket.getaddrinfo` fits; tests pass a fake taking `(host, port)`.
Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

_net = ipaddress.ip_network
# Named so refusals say why. Checked before `is_global`, which in Python 3.11 calls 6to4 and
# NAT64 "global" although they carry an IPv4 address (possibly 127.0.0.1) inside.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = (
    (_net("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("10.0.0.0/8"), "private"),
    (_net("172.16.0.0/12"), "private"),
    (_net("192.168.0.0/16"), "private"),
    (_net("100.64.0.0/10"), "carrier-grade NAT"),
    (_net("169.254.0.0/16"), "link-local (cloud metadata)"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("255.255.255.255/32"), "broadcast"),
    (_net("240.0.0.0/4"), "reserved"),
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    (_net("::ffff:0:0/96"), "IPv4-mapped"),
    (_net("64:ff9b::/96"), "NAT64"),
    (_net("64:ff9b:1::/48"), "NAT64"),
    (_net("2002::/16"), "6to4"),
    (_net("2001::/32"), "Teredo"),
    (_net("fc00::/7"), "unique-local"),
    (_net("fe80::/10"), "link-local"),
    (_net("ff00::/8"), "multicast"),
)
# WHATWG URL parsers read a host whose last label is a number (`2130706433`, `0x7f.1`, `127.1`)
# as an IPv4 address; resolvers often agree. We refuse the ambiguity instead of guessing.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_BAD_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]|\s")


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A URL that passed the static check, with its parts normalised."""

    url: str  # normalised (IDNA host, lower-case scheme, no fragment)
    scheme: str
    host: str  # ASCII (IDNA) host; IPv6 without brackets
    port: int  # explicit or the scheme's default
    ip: IPAddress | None  # set when the host is an IP literal


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings (`settings.dlr_allow_private`) as networks; host bits are tolerated."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _is_allowed(address: IPAddress, allow_private: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket sends ::ffff:a.b.c.d to a.b.c.d, so the v4 allowlist applies.
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in allow_private)


def refusal_reason(address: IPAddress, allow_private: Sequence[IPNetwork] = ()) -> str | None:
    """Why `address` may not be called, or None when it is public or allowlisted."""
    if _is_allowed(address, allow_private):
        return None
    for network, kind in _REFUSED:
        if address in network:
            return f"a {kind} address"
    if not address.is_global:
        return "not a publicly routable address"
    return None


def check_address(
    address: IPAddress, allow_private: Sequence[IPNetwork] = (), host: str = ""
) -> None:
    """Raise `UnsafeUrlError` unless `address` is public or inside an allowlisted network."""
    reason = refusal_reason(address, allow_private)
    if reason is not None:
        subject = f"{host} resolves to {address}" if host and host != str(address) else str(address)
        raise UnsafeUrlError(f"{subject}, {reason}, which receipts may not be sent to")


def _check_hostname(host: str) -> None:
    name = host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise UnsafeUrlError(f"host {host!r} is not a valid DNS name")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise UnsafeUrlError(
            f"host {host!r} looks like an IP address in a non-standard form; "
            "write IPv4 addresses as four decimal numbers"
        )


def _check_host(host: str, allow_private: Sequence[IPNetwork]) -> IPAddress | None:
    if not host:
        raise UnsafeUrlError("URL has no host")
    if "%" in host:
        raise UnsafeUrlError("URL host may not contain percent-escapes or an IPv6 zone")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        _check_hostname(host)
        return None
    check_address(ip, allow_private)
    return ip


def check_url(url: str, *, allow_private: Sequence[IPNetwork] = ()) -> ParsedUrl:
    """Check a receipt URL's shape (and its address, for IP literals) without any I/O."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"URL is longer than {MAX_URL_LENGTH} characters")
    if _BAD_CHARACTERS.search(url):
        # Parsers disagree about these (`\` is `/` to browsers, part of userinfo to httpx).
        raise UnsafeUrlError("URL contains whitespace, control characters or a backslash")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrlError(f"URL is not valid: {exc}") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise UnsafeUrlError("URL scheme must be http or https")
    if parsed.userinfo:
        raise UnsafeUrlError("URL may not contain a user name or password")
    host = parsed.raw_host.decode("ascii").lower()
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
    if not 1 <= port <= 65535:
        raise UnsafeUrlError(f"URL port {port} is outside 1-65535")
    ip = _check_host(host, allow_private)
    normalised = str(parsed.copy_with(fragment=None))
    if len(normalised) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"URL is longer than {MAX_URL_LENGTH} characters once normalised")
    return ParsedUrl(url=normalised, scheme=parsed.scheme, host=host, port=port, ip=ip)


def resolve_safe(
    host: str,
    port: int,
    *,
    allow_private: Sequence[IPNetwork] = (),
    resolver: Resolver = socket.getaddrinfo,
) -> list[IPAddress]:
    """Resolve `host` once (A and AAAA) and return its addresses; refuse if any is not public."""
    try:
        answers = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        # Mostly transient (SERVFAIL, timeouts); the receipt schedule decides when to give up.
        raise WebhookUnavailableError(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookUnavailableError(f"{host} has no IPv4 or IPv6 address")
    for address in addresses:
        # Any bad answer refuses the host: a resolver may hand out the answers in any order.
        check_address(address, allow_private, host)
    return addresses


def direct_transport() -> httpx.HTTPTransport:
    """The real network transport under `PinnedTransport`.

    Keep-alive is off because httpcore pools connections by the IP we connect to: a pooled TLS
    connection verified for one hostname would otherwise carry a request for another hostname
    on the same IP. One handshake per receipt is the price of pinning. No retries: the receipt
    schedule is the one retry layer.
    """
    return httpx.HTTPTransport(
        retries=0, http2=False, limits=httpx.Limits(max_keepalive_connections=0)
    )


class PinnedTransport(httpx.BaseTransport):
    """Checks each request's host at send time and connects to the first checked address."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        allow_private: Sequence[IPNetwork] = (),
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        self._inner = inner if inner is not None else direct_transport()
        self._allow_private = tuple(allow_private)
        self._resolver = resolver

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise UnsafeUrlError("URL scheme must be http or https")
        host = url.raw_host.decode("ascii")
        port = url.port if url.port is not None else DEFAULT_PORTS[url.scheme]
        pinned = resolve_safe(
            host, port, allow_private=self._allow_private, resolver=self._resolver
        )[0]
        if "host" not in request.headers:
            request.headers["host"] = url.netloc.decode("ascii")
        request.url = url.copy_with(host=str(pinned))
        if url.scheme == "https":
            # TLS SNI and certificate checks on the hostname, not on the IP we connect to.
            request.extensions = {**request.extensions, "sni_hostname": host}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
