"""`lua_scripts.each`: many script calls in one round trip, without redis-py's SCRIPT EXISTS
before the pipeline, and still right when the server has forgotten the script."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from worker.store import lua_scripts

COUNT = "redis.call('INCR', KEYS[1]) if ARGV[1] == 'bad' then return redis.error_reply('bad item') end return redis.call('GET', KEYS[1])"  # noqa: E501


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def counting(client: redis.Redis) -> Any:
    script = client.register_script(COUNT)

    def call(target: redis.Redis | redis.client.Pipeline, key: str, arg: str = "") -> Any:
        return script(keys=[key], args=[arg], client=target)

    return call


@pytest.fixture
def no_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: redis.client.Pipeline) -> None:
        raise AssertionError("SCRIPT EXISTS was asked")

    monkeypatch.setattr(redis.client.Pipeline, "load_scripts", refuse)


@pytest.mark.usefixtures("no_exists")
def test_many_calls_go_in_one_pipeline_without_script_exists(client: fakeredis.FakeRedis) -> None:
    call = counting(client)
    call(client, "warm")  # the server knows the script
    assert lua_scripts.each(client, call, [["a"], ["a"], ["b"]]) == ["1", "2", "1"]


@pytest.mark.usefixtures("no_exists")
def test_a_forgotten_script_runs_each_item_exactly_once(client: fakeredis.FakeRedis) -> None:
    """After SCRIPT FLUSH (or a restart) every EVALSHA answers NOSCRIPT without running; each
    item is then run again alone (loading the script): every counter moved once."""
    call = counting(client)
    call(client, "warm")
    client.script_flush()
    answers = lua_scripts.each(client, call, [["a"], ["b"], ["c"]])
    assert answers == ["1", "1", "1"]
    assert [client.get(k) for k in "abc"] == ["1", "1", "1"]


def test_an_item_that_fails_raises_after_the_others_ran(client: fakeredis.FakeRedis) -> None:
    call = counting(client)
    call(client, "warm")
    with pytest.raises(redis.ResponseError, match="bad item"):
        lua_scripts.each(client, call, [["a"], ["b", "bad"], ["c"]])
    assert [client.get(k) for k in "abc"] == ["1", "1", "1"]
