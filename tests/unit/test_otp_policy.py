"""OTP destinations and send limits: number types, countries, sliding windows, cooldown."""

from __future__ import annotations

import fakeredis
import pytest

from worker.errors import RateLimitedError, ValidationError
from worker.otp.policy import Limit, SendGate, check_destination, number_prefix, send_limits
from worker.settings import Settings

T0 = 1_800_000_000_000


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def gate(client: fakeredis.FakeRedis) -> SendGate:
    return SendGate(client)


class TestCheckDestination:
    @pytest.mark.parametrize(
        ("number", "region"),
        [("+14155552671", "US"), ("+4915112345678", "DE"), ("+447911123456", "GG")],
    )
    def test_ordinary_numbers_pass_with_their_region(self, number: str, region: str) -> None:
        """Mobile and fixed numbers may get codes; the region is returned."""
        assert check_destination(number, Settings()) == region

    @pytest.mark.parametrize(
        ("number", "kind"),
        [
            ("+19005551234", "premium-rate"),
            ("+449012345678", "premium-rate"),
            ("+33891123456", "premium-rate"),
            ("+4918012345", "shared-cost"),
            ("+34901123456", "shared-cost"),
        ],
    )
    def test_premium_and_shared_cost_numbers_are_refused(self, number: str, kind: str) -> None:
        """Numbers that earn their operator money (toll fraud) get no codes."""
        with pytest.raises(ValidationError, match=kind) as raised:
            check_destination(number, Settings())
        assert (raised.value.code, raised.value.field) == ("number_type_refused", "to")

    def test_blocked_types_are_configurable(self) -> None:
        """Toll-free numbers can be refused too; premium ones allowed if the operator says so."""
        settings = Settings(otp_blocked_number_types=["toll_free"])
        assert check_destination("+19005551234", settings) == "US"
        with pytest.raises(ValidationError, match="toll-free"):
            check_destination("+18005551234", settings)

    def test_unknown_number_type_setting_is_loud(self) -> None:
        """A misspelt number type in the settings fails at start-up."""
        with pytest.raises(ValueError, match="PREMIUM"):
            Settings(otp_blocked_number_types=["PREMIUM"])

    def test_only_allowed_countries_get_codes(self) -> None:
        """With an allow-list, other regions are refused (422 on `to`)."""
        settings = Settings(otp_allowed_countries=["de", "gb"])
        assert check_destination("+4915112345678", settings) == "DE"
        with pytest.raises(ValidationError, match="US") as raised:
            check_destination("+14155552671", settings)
        assert raised.value.code == "country_not_allowed"

    def test_allowed_countries_read_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`SMSQ_OTP_ALLOWED_COUNTRIES=de, us` is a comma-separated list."""
        monkeypatch.setenv("SMSQ_OTP_ALLOWED_COUNTRIES", "de, us")
        monkeypatch.setenv("SMSQ_OTP_BLOCKED_NUMBER_TYPES", "premium_rate")
        settings = Settings()
        assert settings.otp_allowed_countries == ["DE", "US"]
        assert settings.otp_blocked_number_types == ["PREMIUM_RATE"]


class TestSendLimits:
    def test_prefix_is_the_number_without_its_last_four_digits(self) -> None:
        """Numbers in one range of 10,000 share a prefix limit."""
        assert number_prefix("+14155552671") == "+1415555"

    def test_every_dimension_by_default(self) -> None:
        """Number, prefix and country per key, the key's rate and daily cap, and the shared
        ceilings per destination, all from the settings."""
        limits = send_limits(Settings(), to="+14155552671", region="US", key_id="k1", now=T0)
        day = T0 // 86_400_000
        assert [(lim.kind, lim.subject, lim.shared) for lim in limits] == [
            ("number", "k1:+14155552671", False),
            ("prefix", "k1:+1415555", False),
            ("country", "k1:US", False),
            ("key", "k1", False),
            ("day", f"k1:{day}", False),
            ("number", "+14155552671", True),
            ("prefix", "+1415555", True),
            ("country", "US", True),
        ]
        assert [(lim.count, lim.window) for lim in limits[:1] + limits[5:6]] == [
            (5, 3600), (25, 3600)
        ]  # fmt: skip

    def test_a_zero_limit_is_off(self) -> None:
        """A limit of 0 drops that dimension."""
        settings = Settings(
            otp_limit_prefix=0, otp_limit_country=0, otp_limit_key_daily=0,
            otp_ceiling_number=0, otp_ceiling_prefix=0, otp_ceiling_country=0,
        )  # fmt: skip
        limits = send_limits(settings, to="+14155552671", region="US", key_id="k1", now=T0)
        assert [lim.kind for lim in limits] == ["number", "key"]

    def test_each_key_counts_apart(self) -> None:
        """Two keys' limits for one destination are different counters; the ceilings are one."""
        first, second = (
            {lim.key for lim in send_limits(Settings(), to="+14155552671", region="US",
                                            key_id=key, now=T0)}
            for key in ("k1", "k2")
        )  # fmt: skip
        assert first & second == {
            "smsq:otp:ceiling:number:+14155552671",
            "smsq:otp:ceiling:prefix:+1415555",
            "smsq:otp:ceiling:country:US",
        }

    def test_ceilings_default_to_five_keys_worth(self) -> None:
        """Unset, a ceiling is 5 times its per-key limit, so raising a limit raises it too."""
        settings = Settings(otp_limit_number=100, otp_limit_prefix=30, otp_limit_country=7)
        ceilings = (
            settings.otp_ceiling("number"),
            settings.otp_ceiling("prefix"),
            settings.otp_ceiling("country"),
        )
        assert ceilings == (500, 150, 35)
        assert Settings(otp_ceiling_prefix=40).otp_ceiling("prefix") == 40

    @pytest.mark.parametrize("scope", ["number", "prefix", "country"])
    def test_a_ceiling_must_be_above_the_limit(self, scope: str) -> None:
        """A ceiling one key alone could reach is refused at start-up."""
        with pytest.raises(ValueError, match=f"SMSQ_OTP_CEILING_{scope.upper()}"):
            Settings.model_validate({f"otp_limit_{scope}": 10, f"otp_ceiling_{scope}": 10})
        Settings.model_validate({f"otp_limit_{scope}": 10, f"otp_ceiling_{scope}": 0})  # off


class TestSendGate:
    def test_admits_up_to_the_limit_then_refuses_with_the_wait(self, gate: SendGate) -> None:
        """The third send in a 2-per-60 s window waits until the first leaves the window."""
        limits = [Limit("number", "+14155552671", 2, 60)]
        gate.admit(limits, "a", T0)
        gate.admit(limits, "b", T0 + 10_000)
        with pytest.raises(RateLimitedError, match="this number") as raised:
            gate.admit(limits, "c", T0 + 20_000)
        assert raised.value.retry_after == pytest.approx(40.0)

    def test_window_slides(self, gate: SendGate) -> None:
        """Once the oldest send is older than the window, one more is admitted."""
        limits = [Limit("number", "+14155552671", 2, 60)]
        gate.admit(limits, "a", T0)
        gate.admit(limits, "b", T0 + 10_000)
        gate.admit(limits, "c", T0 + 60_001)
        with pytest.raises(RateLimitedError):
            gate.admit(limits, "d", T0 + 60_002)

    def test_a_refused_send_counts_nowhere(
        self, gate: SendGate, client: fakeredis.FakeRedis
    ) -> None:
        """All or nothing: a send refused by one limit uses no quota of the others."""
        number = Limit("number", "+14155552671", 10, 60)
        key = Limit("key", "k1", 1, 60)
        gate.admit([number, key], "a", T0)
        for member in ("b", "c", "d"):
            with pytest.raises(RateLimitedError, match="API key"):
                gate.admit([number, key], member, T0 + 1)
        assert client.zcard(number.key) == 1

    def test_reports_the_longest_wait_of_all_limits(self, gate: SendGate) -> None:
        """When several limits refuse, Retry-After is the one that frees last."""
        short = Limit("number", "n", 1, 10)
        long = Limit("country", "US", 1, 100)
        gate.admit([short, long], "a", T0)
        with pytest.raises(RateLimitedError, match="country") as raised:
            gate.admit([short, long], "b", T0 + 1000)
        assert raised.value.retry_after == pytest.approx(99.0)

    def test_cooldown_refuses_then_lets_through(
        self, gate: SendGate, client: fakeredis.FakeRedis
    ) -> None:
        """A second send within the cooldown is refused with the time left."""
        gate.admit([], "a", T0, cooldown_key="cool", cooldown_ms=30_000)
        with pytest.raises(RateLimitedError, match="moments ago") as raised:
            gate.admit([], "b", T0 + 1, cooldown_key="cool", cooldown_ms=30_000)
        assert raised.value.retry_after == pytest.approx(29.999)
        gate.admit([], "c", T0 + 30_000, cooldown_key="cool", cooldown_ms=30_000)
        assert 0 < client.pttl("cool") <= 30_000

    def test_limit_keys_expire(self, gate: SendGate, client: fakeredis.FakeRedis) -> None:
        """A limit's log lives no longer than its window."""
        limit = Limit("prefix", "+1415555", 5, 60)
        gate.admit([limit], "a", T0)
        assert 0 < client.pttl(limit.key) <= 60_000

    def test_a_ceiling_refusal_says_the_destination_is_under_attack(self, gate: SendGate) -> None:
        """A send within its key's limits refused by a shared ceiling names the scope."""
        own = Limit("prefix", "k3:+1415555", 5, 3600)
        ceiling = Limit("prefix", "+1415555", 2, 3600, shared=True)
        gate.admit([Limit("prefix", "k1:+1415555", 5, 3600), ceiling], "a", T0)
        gate.admit([Limit("prefix", "k2:+1415555", 5, 3600), ceiling], "b", T0 + 1)
        with pytest.raises(RateLimitedError, match="this number range") as raised:
            gate.admit([own, ceiling], "c", T0 + 2)
        assert raised.value.code == "destination_under_attack"
        assert "under attack" in str(raised.value)

    def test_the_keys_own_limit_is_named_first(self, gate: SendGate) -> None:
        """When a key's own limit and a ceiling both refuse, the answer is the key's own limit
        (a plain rate limit), whichever frees later."""
        own = Limit("number", "k1:n", 1, 10)
        ceiling = Limit("number", "n", 2, 100, shared=True)
        gate.admit([ceiling], "a", T0)
        gate.admit([own, ceiling], "b", T0)
        with pytest.raises(RateLimitedError, match="with this API key") as raised:
            gate.admit([ceiling, own], "c", T0 + 1000)
        assert (raised.value.code, raised.value.retry_after) == ("rate_limited", 9.0)

    def test_daily_cap_is_a_counter_until_midnight_utc(
        self, gate: SendGate, client: fakeredis.FakeRedis
    ) -> None:
        """The key's daily cap counts sends of the UTC day and renews at 00:00 UTC."""
        morning = T0 - T0 % 86_400_000 + 8 * 3_600_000
        (day,) = [
            lim for lim in send_limits(Settings(otp_limit_key_daily=2), to="+14155552671",
                                       region="US", key_id="k1", now=morning)
            if lim.kind == "day"
        ]  # fmt: skip
        gate.admit([day], "a", morning)
        gate.admit([day], "b", morning + 1)
        assert client.get(day.key) == "2"
        with pytest.raises(RateLimitedError, match="daily OTP cap") as raised:
            gate.admit([day], "c", morning + 2)
        assert raised.value.retry_after == pytest.approx(16 * 3600, abs=1)
