"""Redis URLs, Redis Sentinel included (worker.redis_urls): parsing, clients, the Celery broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from worker.celery_app import create_app
from worker.redis_urls import (
    SentinelBlockingConnectionPool,
    SentinelRedis,
    SentinelUrl,
    broker_for,
    celery_broker,
    connect,
    connect_blocking,
    parse_sentinel,
    redacted,
    store_client,
)
from worker.runtime import redis_client
from worker.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sentinel://127.0.0.1:26380/mymaster",
            SentinelUrl(hosts=(("127.0.0.1", 26380),), service="mymaster"),
        ),
        (
            "sentinel://:p%40ss@s1:1,s2:2,s3/orders/3",
            SentinelUrl(
                hosts=(("s1", 1), ("s2", 2), ("s3", 26379)),
                service="orders",
                db=3,
                password="p@ss",
            ),
        ),
        (
            "sentinel://smsq:pw@s1/orders?sentinel_password=sp",
            SentinelUrl(
                hosts=(("s1", 26379),),
                service="orders",
                username="smsq",
                password="pw",
                sentinel_password="sp",
            ),
        ),
        (  # kombu's form: the service comes from the setting
            "sentinel://s1:26379;sentinel://s2:26380",
            SentinelUrl(hosts=(("s1", 26379), ("s2", 26380)), service="from-setting"),
        ),
        (
            "sentinel://:pw@s1:26379/2;sentinel://s2:26380/2",
            SentinelUrl(
                hosts=(("s1", 26379), ("s2", 26380)), service="from-setting", db=2, password="pw"
            ),
        ),
        ("sentinel://s1", SentinelUrl(hosts=(("s1", 26379),), service="from-setting")),
        ("sentinel://s1/4", SentinelUrl(hosts=(("s1", 26379),), service="from-setting", db=4)),
        (
            "sentinel://[::1]:5000,[fe80::1]/svc",
            SentinelUrl(hosts=(("::1", 5000), ("fe80::1", 26379)), service="svc"),
        ),
    ],
)
def test_good_sentinel_urls_parse(url: str, expected: SentinelUrl) -> None:
    assert parse_sentinel(url, service="from-setting") == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sentinel://", "host is empty"),
        ("sentinel:///mymaster", "host is empty"),
        ("sentinel://s1,,s2/mymaster", "host is empty"),
        ("sentinel://:secret@:26379/mymaster", "has no host"),
        ("sentinel://s1:port/mymaster", "not a port number"),
        ("sentinel://s1:70000/mymaster", "not a port number"),
        ("sentinel://[::1/mymaster", "bad sentinel address"),
        ("sentinel://s1/mymaster/x", "database 'x' is not a number"),
        ("sentinel://s1/a/1/c", "/service_name[/db]"),
        ("sentinel://s1/mymaster?timeout=3", "unknown option 'timeout'"),
        ("sentinel://s1/mymaster;sentinel://s2", "SMSQ_REDIS_SENTINEL_SERVICE"),
        ("sentinel://s1;redis://s2", "must start with sentinel://"),
        ("sentinel://s1/1;sentinel://s2/2", "another database"),
    ],
)
def test_bad_sentinel_urls_say_which_setting_and_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"^SMSQ_BROKER_URL: ") as caught:
        parse_sentinel(url, setting="SMSQ_BROKER_URL")
    assert why in str(caught.value)
    assert "secret" not in str(caught.value)


def test_an_empty_service_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="SMSQ_REDIS_URL: no sentinel service name"):
        parse_sentinel("sentinel://s1:26379", service="")


@pytest.mark.parametrize("url", ["http://example.com", "redis://:secret@h:notaport/0"])
def test_bad_redis_urls_name_the_setting_without_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"^SMSQ_REDIS_URL: ") as caught:
        connect(url)
    assert "secret" not in str(caught.value)


def test_redacted_hides_every_password() -> None:
    assert redacted("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redacted("sentinel://u:pw@a,b/svc?sentinel_password=sp") == (
        "sentinel://u:***@a,b/svc?sentinel_password=***"
    )
    assert redacted("sentinel://:pw@a/1;sentinel://:pw@b/1") == (
        "sentinel://:***@a/1;sentinel://:***@b/1"
    )
    assert redacted("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"


def test_plain_urls_give_plain_clients() -> None:
    client = connect("redis://127.0.0.1:1/3", decode_responses=True)
    try:
        assert type(client) is redis.Redis
        assert client.connection_pool.connection_kwargs["db"] == 3
    finally:
        client.close()


def test_sentinel_urls_give_clients_of_the_primary() -> None:
    """No network needed: the pool asks the sentinels only when it connects."""
    client = connect("sentinel://:pw@s1:1,s2:2/orders/5", decode_responses=True, socket_timeout=7)
    try:
        assert isinstance(client, SentinelRedis)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert (pool.service_name, pool.is_master) == ("orders", True)
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (5, "pw", 7)
        assert client.sentinel_manager is not None
        nodes = client.sentinel_manager.sentinels
        assert [n.connection_pool.connection_kwargs["port"] for n in nodes] == [1, 2]
        # The primary's password is not sent to the sentinels (they have their own).
        assert nodes[0].connection_pool.connection_kwargs.get("password") is None
    finally:
        client.close()


def test_the_sentinel_password_goes_to_the_sentinels_only() -> None:
    client = connect("sentinel://s1/orders?sentinel_password=sp")
    try:
        assert isinstance(client, SentinelRedis)
        assert client.sentinel_manager is not None
        node = client.sentinel_manager.sentinels[0]
        assert node.connection_pool.connection_kwargs["password"] == "sp"
        assert client.connection_pool.connection_kwargs.get("password") is None
    finally:
        client.close()


def test_the_blocking_variant_waits_for_a_free_connection() -> None:
    plain = connect_blocking("redis://127.0.0.1:1/0", max_connections=3, timeout=4)
    managed = connect_blocking("sentinel://s1/orders", max_connections=3, timeout=4)
    try:
        for client in (plain, managed):
            pool = client.connection_pool
            assert isinstance(pool, redis.BlockingConnectionPool)
            assert (pool.max_connections, pool.timeout) == (3, 4)
        assert isinstance(managed.connection_pool, SentinelBlockingConnectionPool)
    finally:
        plain.close()
        managed.close()


def test_celery_broker_turns_a_sentinel_url_into_kombus_form() -> None:
    url, options = celery_broker("sentinel://:p%40ss@s1:1,s2/orders/2?sentinel_password=sp")
    assert url == "sentinel://:p%40ss@s1:1/2;sentinel://:p%40ss@s2:26379/2"
    assert options == {"master_name": "orders", "sentinel_kwargs": {"password": "sp"}}
    assert celery_broker("sentinel://s1;sentinel://s2", sentinel_service="svc") == (
        "sentinel://s1:26379/0;sentinel://s2:26379/0",
        {"master_name": "svc"},
    )


@pytest.mark.parametrize("url", ["redis://h:6379/0", "amqp://guest@rabbit//"])
def test_celery_broker_passes_other_urls_unchanged(url: str) -> None:
    assert celery_broker(url) == (url, {})


def test_broker_for_uses_the_service_setting_and_names_the_right_setting() -> None:
    settings = Settings(redis_url="sentinel://s1;sentinel://s2", redis_sentinel_service="orders")
    assert broker_for(settings)[1] == {"master_name": "orders"}
    with pytest.raises(ValueError, match=r"^SMSQ_REDIS_URL: "):
        broker_for(Settings(redis_url="sentinel://s1/a/b/c"))
    with pytest.raises(ValueError, match=r"^SMSQ_BROKER_URL: "):
        broker_for(Settings(redis_url="redis://h/0", broker_url="sentinel://s1/a/b/c"))


def test_the_celery_app_gets_kombus_sentinel_transport() -> None:
    app = create_app(Settings(redis_url="sentinel://:pw@s1:26380,s2:26381/orders/1"))
    try:
        options = app.conf.broker_transport_options
        assert options["master_name"] == "orders"
        assert options["visibility_timeout"] == 3600  # smsq's own options stay
        assert app.conf.broker_url == "sentinel://:pw@s1:26380/1;sentinel://:pw@s2:26381/1"
    finally:
        app.close()


def test_the_service_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMSQ_REDIS_SENTINEL_SERVICE", "orders")
    assert Settings().redis_sentinel_service == "orders"
    assert Settings.model_fields["redis_sentinel_service"].default == "mymaster"


class TestNoAutomaticRetry:
    """Every client smsq builds runs each command once (docs/reliability.md, "When a Redis
    reply is lost"): a retry would run a write whose reply was lost a second time."""

    @pytest.mark.parametrize(
        "build",
        [
            lambda: connect("redis://127.0.0.1:1/0"),
            lambda: connect("sentinel://s1/orders"),
            lambda: connect_blocking("redis://127.0.0.1:1/0", max_connections=2),
            lambda: connect_blocking("sentinel://s1/orders", max_connections=2),
            lambda: store_client(Settings(redis_url="redis://127.0.0.1:1/0")),
            lambda: redis_client(Settings(redis_url="redis://127.0.0.1:1/0")),
        ],
        ids=["plain", "sentinel", "blocking", "blocking-sentinel", "store", "worker"],
    )
    def test_a_client_never_retries_a_command(self, build: Callable[[], redis.Redis]) -> None:
        """Its connections' retry policy allows no retry, whatever redis-py's default."""
        client = build()
        try:
            connection = client.connection_pool.make_connection()
            assert isinstance(connection, redis.connection.AbstractConnection)
            assert connection.retry.get_retries() == 0
        finally:
            client.close()

    @pytest.mark.parametrize(
        "query", ["retry_on_timeout=true", "retry_on_error=ConnectionError", "retry=1"]
    )
    def test_urls_asking_for_retries_are_refused(self, query: str) -> None:
        """A URL's options win over smsq's in redis-py, so they are refused, naming the
        setting (for the broker too: kombu would pass it to redis-py)."""
        with pytest.raises(ValueError, match=r"^SMSQ_REDIS_URL: option .* is not supported"):
            connect(f"redis://:secret@127.0.0.1:1/0?{query}")
        with pytest.raises(ValueError, match=r"^SMSQ_BROKER_URL: option"):
            celery_broker(f"redis://127.0.0.1:1/0?{query}")

    def test_a_caller_asking_for_retries_is_refused(self) -> None:
        with pytest.raises(ValueError, match="never retry"):
            connect("redis://127.0.0.1:1/0", retry_on_timeout=True)

    def test_celery_publishes_once(self) -> None:
        """No kombu `retry_on_timeout` (redis-py then retries connection errors too) and no
        Celery publish retry: a lost LPUSH reply is not published again."""
        app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
        try:
            assert "retry_on_timeout" not in app.conf.broker_transport_options
            assert app.conf.task_publish_retry is False
        finally:
            app.close()
