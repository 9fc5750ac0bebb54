"""Redis clients from smsq's URL settings, Redis Sentinel included (docs/operations.md).

`SMSQ_REDIS_URL` and `SMSQ_BROKER_URL` accept what redis-py's `from_url` accepts (`redis://`,
`rediss://`, `unix://`) and Redis Sentinel in two forms:

    sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/service_name[/db]
    sentinel://[[user]:password@]host1[:port1][/db];sentinel://host2[:port2]...   (kombu's form)

The kombu form names no service: it comes from `SMSQ_REDIS_SENTINEL_SERVICE` (default
`mymaster`). A sentinel port defaults to 26379. The user and password are the primary's (as in a
`redis://` URL); sentinels that require a password of their own get it from the query parameter
`?sentinel_password=...`. A client built here asks the sentinels for the current primary and
follows a failover (redis-py's `Sentinel.master_for`); the broker gets kombu's own sentinel
transport (`celery_broker`).

Every client built here runs each command once: no automatic retry (`once`). When a reply
is lost (the command ran, the connection dropped before its answer), redis-py would otherwise
run a write again (a second XADD, LPUSH, INCR...). The error reaches the caller instead, and
smsq retries only what is idempotent by construction (docs/reliability.md, "When a Redis reply
is lost"). URLs that ask for redis-py's retries (`retry_on_timeout`, `retry_on_error`) are
refused, the broker's included (kombu hands them to redis-py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from worker.settings import Settings

SCHEME = "sentinel://"
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_SERVICE = "mymaster"
# Asking a sentinel where the primary is must not hang on a dead sentinel.
SENTINEL_TIMEOUT_SECONDS = 5.0
# redis-py options that replay a command whose reply was lost (its own default for
# `redis.Redis(host=...)` is ten retries; `retry_on_timeout` retries connection errors too).
RETRY_OPTIONS = ("retry", "retry_on_timeout", "retry_on_error")


def no_retry() -> Retry:
    """redis-py's policy for "run each command once" (a fresh object: redis-py mutates it)."""
    return Retry(NoBackoff(), 0)


def once(client_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`client_kwargs` with every automatic retry turned off; a caller asking for one is a bug."""
    asked = [name for name in RETRY_OPTIONS if client_kwargs.get(name)]
    if asked:
        raise ValueError(f"smsq's Redis clients never retry by themselves (asked: {asked})")
    return {**client_kwargs, "retry": no_retry(), "retry_on_timeout": False, "retry_on_error": []}


def _refuse_retry_options(url: str, setting: str) -> None:
    """A URL's query options win over keyword arguments in redis-py: refuse the retrying ones."""
    query = url.partition("?")[2]
    for name, _value in parse_qsl(query, keep_blank_values=True):
        if name.lower() in RETRY_OPTIONS:
            raise ValueError(
                f"{setting}: option {name!r} is not supported: smsq retries only what is safe "
                f"to run twice (docs/reliability.md) (got {redacted(url)!r})"
            )


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed sentinel URL."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith(SCHEME)


def redacted(url: str) -> str:
    """The URL without any password, for messages and `smsq status`."""
    url, mark, query = url.partition("?")
    if mark:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={'***' if 'password' in k else quote(v)}" for k, v in pairs)
    parts = []
    for part in url.split(";"):  # kombu's sentinel form: several URLs
        scheme, sep, rest = part.partition("://")
        netloc, slash, tail = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        if sep and at:
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{userinfo}@{hosts}"
        parts.append(scheme + sep + netloc + slash + tail if sep else part)
    return ";".join(parts) + mark + query


def parse_sentinel(
    url: str, *, service: str = DEFAULT_SERVICE, setting: str = "SMSQ_REDIS_URL"
) -> SentinelUrl:
    """Parse either sentinel form; `service` is used when the URL names none.

    Raises `ValueError` naming `setting` and saying what is wrong (never the password).
    """

    def fail(why: str) -> ValueError:
        return ValueError(f"{setting}: {why} in {redacted(url)!r}")

    text = url.strip()
    if not is_sentinel(text):
        raise fail(f"not a sentinel URL (expected {SCHEME}...)")
    text, _, query = text.partition("?")
    sentinel_password = _sentinel_password(query, fail)
    pieces = [piece.strip() for piece in text.split(";")]
    hosts: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for index, piece in enumerate(pieces):
        if not piece.lower().startswith(SCHEME):
            raise fail(f"every ';'-separated part must start with {SCHEME}")
        netloc, _, path = piece[len(SCHEME) :].partition("/")
        userinfo, at, host_list = netloc.rpartition("@")
        hosts.extend(_host_port(host.strip(), fail) for host in host_list.split(","))
        segments = [segment for segment in path.split("/") if segment]
        if index == 0:
            if at:
                user, colon, secret = userinfo.partition(":")
                username = unquote(user) or None
                password = unquote(secret) if colon else None
            service, db = _service_db(segments, service, len(pieces) > 1, fail)
        elif segments != [str(db)] and segments:
            raise fail("a later sentinel of the kombu form gives another database")
    if not service:
        raise fail("no sentinel service name")
    return SentinelUrl(
        hosts=tuple(hosts),
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def _sentinel_password(query: str, fail: Callable[[str], ValueError]) -> str | None:
    """The one query option: `sentinel_password`."""
    found = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "sentinel_password":
            raise fail(f"unknown option {name!r} (known: sentinel_password)")
        found = value or None
    return found


def _service_db(
    segments: list[str], service: str, kombu_form: bool, fail: Callable[[str], ValueError]
) -> tuple[str, int]:
    """The service and database from the first URL's path segments."""
    if kombu_form or not segments or segments[0].isdigit():
        # kombu's form: the path, if any, is the database number.
        if len(segments) > 1 or (segments and not segments[0].isdigit()):
            raise fail(
                "in the form sentinel://h1:p1;sentinel://h2:p2 the path can only be a "
                "database number; the service name comes from SMSQ_REDIS_SENTINEL_SERVICE"
            )
        return service, int(segments[0]) if segments else 0
    if len(segments) > 2:
        raise fail("expected the path /service_name[/db]")
    if len(segments) == 2 and not segments[1].isdigit():
        raise fail(f"database {segments[1]!r} is not a number")
    return unquote(segments[0]), int(segments[1]) if len(segments) == 2 else 0


def _host_port(host: str, fail: Callable[[str], ValueError]) -> tuple[str, int]:
    if not host:
        raise fail("a sentinel host is empty")
    if host.startswith("["):  # [ipv6]:port
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise fail(f"bad sentinel address {host!r}")
        port_text = rest[1:]
    else:
        name, _, port_text = host.partition(":")
    if not name:
        raise fail(f"sentinel address {host!r} has no host")
    if not port_text:
        return name, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise fail(f"sentinel port {port_text!r} is not a port number")
    return name, int(port_text)


class SentinelRedis(redis.Redis):
    """A client of the current primary that also closes its connections to the sentinels."""

    sentinel_manager: Sentinel | None = None  # (`sentinel` is Redis's SENTINEL command)

    def close(self) -> None:
        super().close()
        if self.sentinel_manager is not None:
            self.sentinel_manager.close()


class SentinelBlockingConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A sentinel-managed pool that waits for a free connection (like `BlockingConnectionPool`)."""


def _sentinel(parsed: SentinelUrl, client_kwargs: dict[str, Any]) -> Sentinel:
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    for name in ("socket_keepalive", "socket_keepalive_options"):
        if name in client_kwargs:
            sentinel_kwargs[name] = client_kwargs[name]
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    return Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.hosts), sentinel_kwargs=sentinel_kwargs
    )


def _primary(
    parsed: SentinelUrl, pool_class: type[SentinelConnectionPool], client_kwargs: dict[str, Any]
) -> redis.Redis:
    sentinel = _sentinel(parsed, client_kwargs)
    kwargs: dict[str, Any] = {"db": parsed.db, **client_kwargs}
    if parsed.username:
        kwargs["username"] = parsed.username
    if parsed.password:
        kwargs["password"] = parsed.password
    client: SentinelRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service, redis_class=SentinelRedis, connection_pool_class=pool_class, **kwargs
    )
    client.sentinel_manager = sentinel
    return client


def connect(
    url: str,
    *,
    sentinel_service: str = DEFAULT_SERVICE,
    setting: str = "SMSQ_REDIS_URL",
    **client_kwargs: Any,
) -> redis.Redis:
    """A client for `url` (any accepted form); keyword arguments as for `redis.Redis.from_url`.
    It runs each command once (`once`)."""
    client_kwargs = once(client_kwargs)
    if is_sentinel(url):
        parsed = parse_sentinel(url, service=sentinel_service, setting=setting)
        return _primary(parsed, SentinelConnectionPool, client_kwargs)
    _refuse_retry_options(url, setting)
    try:
        return redis.Redis.from_url(url, **client_kwargs)
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc} (got {redacted(url)!r})") from None


def connect_blocking(
    url: str,
    *,
    max_connections: int,
    timeout: float = 20,
    sentinel_service: str = DEFAULT_SERVICE,
    setting: str = "SMSQ_REDIS_URL",
    **client_kwargs: Any,
) -> redis.Redis:
    """Like `connect`, with a pool that waits up to `timeout` s for a free connection."""
    client_kwargs = once(client_kwargs)
    if is_sentinel(url):
        parsed = parse_sentinel(url, service=sentinel_service, setting=setting)
        kwargs = {**client_kwargs, "max_connections": max_connections, "timeout": timeout}
        return _primary(parsed, SentinelBlockingConnectionPool, kwargs)
    _refuse_retry_options(url, setting)
    try:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **client_kwargs
        )
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc} (got {redacted(url)!r})") from None
    return redis.Redis.from_pool(pool)


def store_client(settings: Settings, **client_kwargs: Any) -> redis.Redis:
    """A client of the store's Redis (`SMSQ_REDIS_URL`)."""
    return connect(
        settings.effective_redis_url,
        sentinel_service=settings.redis_sentinel_service,
        **client_kwargs,
    )


def celery_broker(
    url: str, *, sentinel_service: str = DEFAULT_SERVICE, setting: str = "SMSQ_BROKER_URL"
) -> tuple[str, dict[str, Any]]:
    """The broker URL for kombu and the transport options it needs besides smsq's own.

    A sentinel URL becomes kombu's `sentinel://h1:p1/db;sentinel://h2:p2/db` with the service
    as `master_name` (and `sentinel_kwargs` for a sentinel password); any other URL (Redis,
    RabbitMQ) is kombu's business and passes unchanged.
    """
    if not is_sentinel(url):
        _refuse_retry_options(url, setting)
        return url, {}
    parsed = parse_sentinel(url, service=sentinel_service, setting=setting)
    userinfo = ""
    if parsed.password:
        userinfo = f"{quote(parsed.username or '', safe='')}:{quote(parsed.password, safe='')}@"
    elif parsed.username:
        userinfo = f"{quote(parsed.username, safe='')}@"
    parts = []
    for host, port in parsed.hosts:
        name = f"[{host}]" if ":" in host else host
        parts.append(f"sentinel://{userinfo}{name}:{port}/{parsed.db}")
    options: dict[str, Any] = {"master_name": parsed.service}
    if parsed.sentinel_password:
        options["sentinel_kwargs"] = {"password": parsed.sentinel_password}
    return ";".join(parts), options


def broker_for(settings: Settings) -> tuple[str, dict[str, Any]]:
    """`celery_broker` of the configured broker (`SMSQ_BROKER_URL`, else `SMSQ_REDIS_URL`)."""
    return celery_broker(
        settings.effective_broker_url,
        sentinel_service=settings.redis_sentinel_service,
        setting="SMSQ_BROKER_URL" if settings.broker_url else "SMSQ_REDIS_URL",
    )
