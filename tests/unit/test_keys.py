"""API keys: creation, scopes and limits, lookup, revocation, signing-secret rotation."""

from __future__ import annotations

import time

import fakeredis
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from worker.errors import RateLimitedError
from worker.keys import (
    ALL_SCOPES,
    KeyStore,
    SigningSecret,
    key_hash,
    parse_duration,
    parse_rate,
)
from worker.quotas import Quotas
from worker.store.keys import api_key_key
from worker.webhooks import signature_headers

BODY = b'{"id":"m1","status":"delivered"}'


@pytest.fixture
def keys() -> KeyStore:
    return KeyStore(fakeredis.FakeRedis(decode_responses=True))


class TestCreate:
    def test_stores_only_the_hash(self, keys: KeyStore) -> None:
        """The key in clear is returned once; Redis holds its SHA-256 only."""
        created = keys.create("app")
        assert created.api_key.startswith("smsq_")
        dump = str({k: keys.redis.dump(k) for k in keys.redis.keys("*")})
        assert created.api_key not in dump
        assert keys.redis.get(f"smsq:keyhash:{key_hash(created.api_key)}") == created.key.id

    def test_defaults_to_every_scope_and_no_limits(self, keys: KeyStore) -> None:
        """A plain key may do everything and has no rate or quota."""
        key = keys.create("app").key
        assert key.scopes == ALL_SCOPES
        assert (key.rate, key.daily, key.limited) == (0.0, 0, False)

    def test_round_trips_scopes_and_limits(self, keys: KeyStore) -> None:
        """Scopes, rate, burst and daily quota are stored and read back."""
        created = keys.create("app", ("read", "send"), rate=2.5, burst=4, daily=100)
        key = keys.get(created.key.id)
        assert key is not None
        assert (key.scopes, key.rate, key.burst, key.daily) == (("send", "read"), 2.5, 4, 100)
        assert key.limited

    def test_refuses_unknown_scopes(self, keys: KeyStore) -> None:
        """An unknown scope is a ValueError naming it."""
        with pytest.raises(ValueError, match="admin"):
            keys.create("app", ("send", "admin"))

    def test_refuses_negative_limits(self, keys: KeyStore) -> None:
        """Negative limits are refused."""
        with pytest.raises(ValueError, match=">= 0"):
            keys.create("app", daily=-1)


class TestAuthenticate:
    def test_finds_the_live_key(self, keys: KeyStore) -> None:
        """The presented key maps to its record."""
        created = keys.create("app")
        found = keys.authenticate(created.api_key)
        assert found is not None
        assert found.id == created.key.id

    def test_unknown_and_revoked_keys_are_none(self, keys: KeyStore) -> None:
        """An unknown key or a revoked one authenticates as nobody."""
        created = keys.create("app")
        assert keys.authenticate("smsq_nope") is None
        assert keys.revoke(created.key.id)
        assert keys.authenticate(created.api_key) is None
        assert not keys.revoke("missing")

    def test_lists_every_key(self, keys: KeyStore) -> None:
        """`list` returns each key once."""
        ids = {keys.create(f"k{i}").key.id for i in range(3)}
        assert {k.id for k in keys.list()} == ids

    def test_set_limits_changes_only_what_is_given(self, keys: KeyStore) -> None:
        """`set_limits` updates the named limits and keeps the rest."""
        key_id = keys.create("app", rate=1, daily=10).key.id
        assert keys.set_limits(key_id, daily=50)
        key = keys.get(key_id)
        assert key is not None
        assert (key.rate, key.daily) == (1.0, 50)
        assert not keys.set_limits("missing", daily=1)


class TestRotation:
    def test_both_secrets_sign_during_the_overlap(self, keys: KeyStore) -> None:
        """After a rotation receipts carry two signatures; each secret verifies alone."""
        created = keys.create("app")
        fresh = keys.rotate_secret(created.key.id, overlap_seconds=3600)
        assert fresh is not None
        assert fresh != created.webhook_secret
        secrets = keys.signing_secrets(created.key.id)
        assert secrets == (fresh, created.webhook_secret)
        headers = signature_headers(secrets, "evt_m1_2", int(time.time()), BODY)
        assert len(headers["webhook-signature"].split()) == 2
        for secret in (created.webhook_secret, fresh):
            Webhook(secret).verify(BODY, headers)

    def test_old_secret_stops_signing_when_the_overlap_ends(self, keys: KeyStore) -> None:
        """Once its end has passed, the old secret is dropped and no longer verifies."""
        created = keys.create("app")
        fresh = keys.rotate_secret(created.key.id, overlap_seconds=3600)
        assert fresh is not None
        ended = f"{fresh} {created.webhook_secret}|{int(time.time() * 1000) - 1}"
        keys.redis.hset(api_key_key(created.key.id), "secrets", ended)
        assert keys.signing_secrets(created.key.id) == (fresh,)
        secrets = keys.signing_secrets(created.key.id)
        headers = signature_headers(secrets, "evt_m1_2", int(time.time()), BODY)
        with pytest.raises(WebhookVerificationError):
            Webhook(created.webhook_secret).verify(BODY, headers)

    def test_zero_overlap_replaces_at_once(self, keys: KeyStore) -> None:
        """With no overlap only the new secret signs."""
        created = keys.create("app")
        fresh = keys.rotate_secret(created.key.id, overlap_seconds=0)
        assert keys.signing_secrets(created.key.id) == (fresh,)

    def test_a_second_rotation_keeps_the_earlier_end(self, keys: KeyStore) -> None:
        """Rotating again never extends a secret already being retired."""
        created = keys.create("app")
        keys.rotate_secret(created.key.id, overlap_seconds=60)
        keys.rotate_secret(created.key.id, overlap_seconds=3600)
        key = keys.get(created.key.id)
        assert key is not None
        first = next(s for s in key.signing if s.secret == created.webhook_secret)
        assert first.expires_at is not None
        assert first.expires_at <= time.time() * 1000 + 61_000
        assert len(key.secrets) == 3

    def test_unknown_key_rotates_nothing(self, keys: KeyStore) -> None:
        """Rotating a key that does not exist returns None and writes nothing."""
        assert keys.rotate_secret("missing", 60) is None
        assert not keys.redis.exists(api_key_key("missing"))

    def test_secret_encoding_round_trips(self) -> None:
        """A secret with and without an end survives encode / decode."""
        for secret in (SigningSecret("whsec_a"), SigningSecret("whsec_a", 123)):
            assert SigningSecret.decode(secret.encode()) == secret


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "per_second"),
        [("10/s", 10.0), ("600/m", 10.0), ("7200/h", 2.0), ("5", 5.0), ("0.5/sec", 0.5)],
    )
    def test_rates(self, text: str, per_second: float) -> None:
        """Rates read per second, minute or hour."""
        assert parse_rate(text) == pytest.approx(per_second)

    @pytest.mark.parametrize("text", ["", "fast", "0/s", "10/d", "-1/s"])
    def test_bad_rates(self, text: str) -> None:
        """Anything else is a ValueError."""
        with pytest.raises(ValueError, match="rate"):
            parse_rate(text)

    @pytest.mark.parametrize(
        ("text", "seconds"), [("24h", 86400), ("30m", 1800), ("7d", 604800), ("90", 90), ("0", 0)]
    )
    def test_durations(self, text: str, seconds: int) -> None:
        """Durations read in seconds, minutes, hours or days."""
        assert parse_duration(text) == seconds


class TestQuotas:
    def test_rate_refuses_beyond_the_burst_with_the_wait(self, keys: KeyStore) -> None:
        """At 1/s with a burst of 2, the third call at once is refused for about a second."""
        key = keys.create("app", rate=1, burst=2).key
        quotas = Quotas(keys.redis)
        quotas.charge(key)
        quotas.charge(key)
        with pytest.raises(RateLimitedError) as refused:
            quotas.charge(key)
        assert 0.5 < refused.value.retry_after <= 1.0

    def test_daily_quota_counts_messages_and_refunds(self, keys: KeyStore) -> None:
        """Messages count against the day; a refund gives them back."""
        key = keys.create("app", daily=10).key
        quotas = Quotas(keys.redis)
        charge = quotas.charge(key, 6)
        with pytest.raises(RateLimitedError, match="used up") as refused:
            quotas.charge(key, 5)
        assert 0 < refused.value.retry_after <= 86_400
        quotas.refund(charge)
        quotas.charge(key, 10)
        assert quotas.used_today(key.id) == 10

    def test_a_request_larger_than_the_quota_says_so(self, keys: KeyStore) -> None:
        """A batch bigger than the whole quota is refused with that reason."""
        key = keys.create("app", daily=10).key
        with pytest.raises(RateLimitedError, match="more than the daily quota"):
            Quotas(keys.redis).charge(key, 11)

    def test_a_refused_call_takes_nothing(self, keys: KeyStore) -> None:
        """A call refused by the daily quota does not use up the rate either."""
        key = keys.create("app", rate=1, burst=1, daily=1).key
        quotas = Quotas(keys.redis)
        with pytest.raises(RateLimitedError, match="daily"):
            quotas.charge(key, 2)
        quotas.charge(key, 1)  # the rate's one slot was still free


class TestCountries:
    def test_a_key_has_no_list_of_its_own_by_default(self, keys: KeyStore) -> None:
        """Without `--countries` a key follows the deployment's SMSQ_ALLOWED_COUNTRIES."""
        created = keys.create("app")
        stored = keys.get(created.key.id)
        assert stored is not None
        assert created.key.countries == stored.countries == ()

    def test_round_trips_its_countries(self, keys: KeyStore) -> None:
        """A key's countries are checked, upper-cased, stored and read back; `*` too."""
        created = keys.create("app", countries=["us", "km"])
        assert created.key.countries == ("US", "KM")
        stored = keys.get(created.key.id)
        assert stored is not None
        assert stored.countries == ("US", "KM")
        assert keys.create("anywhere", countries=["*"]).key.countries == ("*",)

    def test_refuses_unknown_countries(self, keys: KeyStore) -> None:
        """An unknown country code is a ValueError naming it; nothing is stored."""
        with pytest.raises(ValueError, match="XX"):
            keys.create("app", countries=["US", "XX"])
        assert keys.list() == []

    def test_set_countries_replaces_or_clears(self, keys: KeyStore) -> None:
        """`set_countries` replaces the list; an empty one goes back to the deployment's."""
        key_id = keys.create("app", countries=["US"]).key.id
        assert keys.set_countries(key_id, ["gb", "de"])
        assert keys.get(key_id).countries == ("GB", "DE")  # type: ignore[union-attr]
        assert keys.set_countries(key_id, [""])
        assert keys.get(key_id).countries == ()  # type: ignore[union-attr]
        assert not keys.set_countries("nope", ["US"])
