"""The command line of inbound messages and opt-outs, on a real Redis: `smsq keys numbers`,
`smsq keys create|limits --mo-url --otp-optout`, `smsq optouts`, `smsq mo list|replay`,
`smsq carriers mo-url`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from typer.testing import CliRunner, Result

from producer import cli
from worker.clock import now_ms
from worker.keys import KeyStore
from worker.mo.intake import MoIntake, ScheduledPublisher
from worker.optouts import DEPLOYMENT, OptOuts
from worker.settings import Settings
from worker.store.mo import MoStore

pytestmark = pytest.mark.integration

HANDSET = "+4915112340001"
Run = Callable[..., Result]


@pytest.fixture
def smsq(redis_url: str) -> Run:
    env = {"SMSQ_REDIS_URL": redis_url, "SMSQ_SECRET_KEY": "cli-server-key",
           "SMSQ_PUBLIC_URL": "https://smsq.example", "SMSQ_DLR_ALLOW_PRIVATE": ""}  # fmt: skip

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli.app, list(args), env=env)

    return run


def test_keys_own_numbers_with_their_mo_urls(smsq: Run, redis_client: redis.Redis) -> None:
    run = smsq
    created = run("keys", "create", "shop", "--mo-url", "https://app.example/mo",
                  "--otp-optout", "exempt")  # fmt: skip
    assert created.exit_code == 0, created.output
    key_id = created.output.split()[2]
    key = KeyStore(redis_client).get(key_id)
    assert key is not None
    assert (key.mo_url, key.otp_optout) == ("https://app.example/mo", "exempt")
    assert run("keys", "numbers", "add", key_id, "4930123456").exit_code == 0
    assert run("keys", "numbers", "add", key_id, "12345", "--mo-url",
               "https://app.example/short").exit_code == 0  # fmt: skip
    listed = run("keys", "numbers", "list", key_id).output
    assert "+4930123456  https://app.example/mo (the key's)" in listed
    assert "12345  https://app.example/short" in listed
    assert run("keys", "numbers", "remove", key_id, "+4930123456").exit_code == 0
    assert run("keys", "numbers", "remove", key_id, "+4930123456").exit_code == 1
    assert run("keys", "limits", key_id, "--mo-url", "", "--otp-optout", "refuse").exit_code == 0
    assert KeyStore(redis_client).get(key_id).mo_url == ""  # type: ignore[union-attr]
    assert "mo-url=-  otp-optout=refuse  countries=" in run("keys", "list").output


def test_unsafe_mo_urls_and_unknown_keys_are_refused(smsq: Run) -> None:
    run = smsq
    refused = run("keys", "create", "shop", "--mo-url", "http://10.0.0.1/mo")
    assert refused.exit_code == 2
    assert "mo-url" in refused.output
    assert run("keys", "numbers", "add", "nope", "4930123456").exit_code == 1
    assert run("optouts", "add", "nope", HANDSET).exit_code == 1
    assert run("keys", "limits", "nope", "--otp-optout", "sometimes").exit_code == 2


def test_optouts_by_hand(smsq: Run, redis_client: redis.Redis) -> None:
    run = smsq
    key_id = KeyStore(redis_client).create("shop").key.id
    assert run("optouts", "add", key_id, "4915112340001").output.startswith("added +4915")
    assert OptOuts(redis_client).refused(key_id, [HANDSET]) == [True]
    assert HANDSET in run("optouts", "list", key_id).output
    assert run("optouts", "remove", key_id, HANDSET).exit_code == 0
    assert run("optouts", "remove", key_id, HANDSET).exit_code == 1
    assert run("optouts", "add", "deployment", HANDSET).exit_code == 0
    assert [n for n, _ in OptOuts(redis_client).numbers(DEPLOYMENT)] == [HANDSET]
    assert run("optouts", "add", key_id, "not a number").exit_code == 2


def test_mo_list_and_replay(smsq: Run, redis_client: redis.Redis, redis_url: str) -> None:
    """`smsq mo list unowned` shows an MO nobody owns; a dead-lettered webhook is replayed
    (queued again), one that never had a webhook is not."""
    run = smsq
    settings = Settings(redis_url=redis_url)
    intake = MoIntake.build(redis_client, ScheduledPublisher(redis_client), settings)
    unowned = intake.accept("sim", HANDSET, "+4930123456", "hello there", received_at=now_ms())
    listed = run("mo", "list", "unowned").output
    assert f"{unowned}" in listed
    assert "+4915112340001 -> +4930123456  sim  -  none  'hello there'" in listed
    key_id = KeyStore(redis_client).create("shop", mo_url="https://app.example/mo").key.id
    intake.owners.assign(key_id, "+4930999999")
    owned = intake.accept("sim", HANDSET, "+4930999999", "hi", received_at=now_ms())
    redis_client.hset(f"smsq:mo:{owned}", "state", "dead")
    redis_client.zadd("smsq:mo:dead", {str(owned): now_ms()})
    assert run("mo", "replay", str(unowned)).exit_code == 1
    replayed = run("mo", "replay", "--since", "2000-01-01T00:00:00")
    assert replayed.exit_code == 0, replayed.output
    record = MoStore(redis_client).load(str(owned))
    assert record is not None
    assert record.state == "open"
    assert MoStore(redis_client).dead() == []


def test_carriers_mo_url_prints_the_tokenised_url(smsq: Run) -> None:
    run = smsq
    printed = run("carriers", "mo-url").output
    assert printed.startswith("sim  https://smsq.example/carriers/sim/mo?token=")
    assert run("carriers", "mo-url", "kannel").exit_code == 1
