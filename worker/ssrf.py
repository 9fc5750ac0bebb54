"""SSRF guard: refuse URLs that reach non-public addresses; connect only to the address checked.

Two layers (docs/security.md §4):

- `check_url` at submission time: the URL's shape, and IP-literal hosts against the address rules.
- `PinnedTransport` at send time, on every request: resolve A and AAAA once (`resolve_safe`),
  refuse if any answer is not public, then connect to the first checked address while the
  `Host` header, TLS SNI and certificate verification stay on the hostname. The second
  resolution a DNS-rebinding attacker hopes for never happens.

"Public" is an allow-list (`worker.addresses`). `allow_private` admits networks that are not
public (development: `SMSQ_DLR_ALLOW_PRIVATE`); `deny` refuses `host:port` endpoints even there
(`SMSQ_DLR_DENY`: `smsq up` lists its own API, simulator and Redis), at both layers.

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

from worker.addresses import IPAddress, IPNetwork, embedded_ipv4, public_refusal
from worker.errors import UnsafeUrlError, WebhookUnavailableError

__all__ = [
    "Endpoint", "IPAddress", "IPNetwork", "ParsedUrl", "PinnedTransport", "Resolver",
    "check_address", "check_url", "direct_transport", "loopback_endpoints", "parse_denied",
    "parse_networks", "refusal_reason", "resolve_safe",
]  # fmt: skip

# `socket.getaddrinfo` fits; tests pass a fake taking `(host, port)`.
Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A `host:port` receipts never go to, allow-listed network or not (`SMSQ_DLR_DENY`)."""

    text: str  # as configured, for refusals
    port: int
    network: IPNetwork | None = None  # an address or CIDR entry
    name: str = ""  # a DNS-name entry (lower-case, no trailing dot)

    def matches_address(self, address: IPAddress, port: int) -> bool:
        """The address (or the IPv4 address it carries, e.g. `::ffff:127.0.0.1`) at `port`."""
        if port != self.port or self.network is None:
            return False
        return any(a in self.network for a in (address, *embedded_ipv4(address)))

    def matches_name(self, host: str, port: int) -> bool:
        return port == self.port and bool(self.name) and host.lower().rstrip(".") == self.name


def parse_denied(entries: Iterable[str]) -> tuple[Endpoint, ...]:
    """`SMSQ_DLR_DENY` entries: `IP:PORT`, `CIDR:PORT`, `[IPv6]:PORT`, `[IPv6/len]:PORT` or
    `name:PORT`; ValueError naming a malformed one."""
    endpoints = []
    for entry in (e.strip() for e in entries):
        host, colon, port_text = entry.rpartition(":")
        if not colon or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r} is not host:port (e.g. 127.0.0.1:8025, [::1]:8025)")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{entry!r}: write an IPv6 address in brackets, [::1]:8025")
        host = host.removeprefix("[").removesuffix("]")
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            if not host or ":" in host or "/" in host:
                raise ValueError(f"{entry!r}: {host!r} is no address, network or name") from None
            endpoints.append(Endpoint(entry, int(port_text), name=host.lower().rstrip(".")))
        else:
            endpoints.append(Endpoint(entry, int(port_text), network=network))
    return tuple(endpoints)


def loopback_endpoints(ports: Iterable[int]) -> list[str]:
    """`SMSQ_DLR_DENY` entries for services listening on this machine's loopback at `ports`."""
    return [f"{host}:{port}" for port in ports for host in ("127.0.0.0/8", "[::1]", "localhost")]


def _is_allowed(address: IPAddress, allow_private: Sequence[IPNetwork]) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket sends ::ffff:a.b.c.d to a.b.c.d, so the v4 allowlist applies.
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in allow_private)


def _denied(endpoint: Endpoint) -> str:
    return f"refused by SMSQ_DLR_DENY ({endpoint.text}, e.g. one of smsq's own services)"


def refusal_reason(
    address: IPAddress,
    allow_private: Sequence[IPNetwork] = (),
    *,
    port: int | None = None,
    deny: Sequence[Endpoint] = (),
) -> str | None:
    """Why `address` (at `port`, if given) may not be called, or None when it is public or
    allowlisted and not denied."""
    if port is not None:
        denied = next((e for e in deny if e.matches_address(address, port)), None)
        if denied is not None:
            return _denied(denied)
    if _is_allowed(address, allow_private):
        return None
    return public_refusal(address)


def check_address(
    address: IPAddress,
    allow_private: Sequence[IPNetwork] = (),
    host: str = "",
    *,
    port: int | None = None,
    deny: Sequence[Endpoint] = (),
) -> None:
    """Raise `UnsafeUrlError` unless `address` is public or inside an allowlisted network (and,
    with `port`, not a denied endpoint)."""
    reason = refusal_reason(address, allow_private, port=port, deny=deny)
    if reason is not None:
        subject = f"{host} resolves to {address}" if host and host != str(address) else str(address)
        if port is not None:
            subject += f" (port {port})"
        raise UnsafeUrlError(f"{subject}, {reason}, which receipts may not be sent to")


def _check_name_denied(host: str, port: int, deny: Sequence[Endpoint]) -> None:
    denied = next((e for e in deny if e.matches_name(host, port)), None)
    if denied is not None:
        raise UnsafeUrlError(f"{host} (port {port}) is {_denied(denied)}")


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


def _check_host(
    host: str, port: int, allow_private: Sequence[IPNetwork], deny: Sequence[Endpoint]
) -> IPAddress | None:
    if not host:
        raise UnsafeUrlError("URL has no host")
    if "%" in host:
        raise UnsafeUrlError("URL host may not contain percent-escapes or an IPv6 zone")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        _check_hostname(host)
        _check_name_denied(host, port, deny)
        return None
    check_address(ip, allow_private, port=port, deny=deny)
    return ip


def check_url(
    url: str, *, allow_private: Sequence[IPNetwork] = (), deny: Sequence[Endpoint] = ()
) -> ParsedUrl:
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
    ip = _check_host(host, port, allow_private, deny)
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
    deny: Sequence[Endpoint] = (),
) -> list[IPAddress]:
    """Resolve `host` once (A and AAAA) and return its addresses; refuse if any is not public
    (or is a denied endpoint at `port`)."""
    _check_name_denied(host, port, deny)
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
        check_address(address, allow_private, host, port=port, deny=deny)
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
        deny: Sequence[Endpoint] = (),
    ) -> None:
        self._inner = inner if inner is not None else direct_transport()
        self._allow_private = tuple(allow_private)
        self._resolver = resolver
        self._deny = tuple(deny)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise UnsafeUrlError("URL scheme must be http or https")
        host = url.raw_host.decode("ascii")
        port = url.port if url.port is not None else DEFAULT_PORTS[url.scheme]
        pinned = resolve_safe(
            host, port, allow_private=self._allow_private, resolver=self._resolver,
            deny=self._deny,
        )[0]  # fmt: skip
        if "host" not in request.headers:
            request.headers["host"] = url.netloc.decode("ascii")
        request.url = url.copy_with(host=str(pinned))
        if url.scheme == "https":
            # TLS SNI and certificate checks on the hostname, not on the IP we connect to.
            request.extensions = {**request.extensions, "sni_hostname": host}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
