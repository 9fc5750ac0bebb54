"""Geo permissions: the deployment's countries, a key's own list, refusals naming the country."""

from __future__ import annotations

import pytest

from worker.errors import ValidationError
from worker.geo import GeoPermissions, check_countries, describe, region_of
from worker.settings import DEFAULT_ALLOWED_COUNTRIES, Settings

COMOROS = "+2693212345"


class TestCheckCountries:
    def test_upper_cases_and_drops_blanks_and_repeats(self) -> None:
        """`us, gb,,us` is (US, GB)."""
        assert check_countries(["us", " gb", "", "us"]) == ("US", "GB")

    @pytest.mark.parametrize(("values", "error"), [(["XX"], "XX"), (["*", "US"], "combined")])
    def test_refuses_unknown_codes_and_a_mixed_star(self, values: list[str], error: str) -> None:
        """An unknown code, or `*` next to codes, is a ValueError saying which."""
        with pytest.raises(ValueError, match=error):
            check_countries(values)


class TestSettings:
    def test_the_default_list_is_short_and_low_risk(self) -> None:
        """By default the well-known low-risk markets are allowed, and Comoros is not."""
        allowed = Settings().allowed_countries
        assert allowed == list(DEFAULT_ALLOWED_COUNTRIES)
        assert {"US", "GB", "GG", "DE", "FR", "ES"} <= set(allowed)
        assert "KM" not in allowed

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`SMSQ_ALLOWED_COUNTRIES=de, km` or `*`."""
        monkeypatch.setenv("SMSQ_ALLOWED_COUNTRIES", "de, km")
        assert Settings().allowed_countries == ["DE", "KM"]
        monkeypatch.setenv("SMSQ_ALLOWED_COUNTRIES", "*")
        assert Settings().allowed_countries == ["*"]

    @pytest.mark.parametrize("value", ["", " , ", "USA"])
    def test_an_empty_or_wrong_list_is_loud(self, value: str) -> None:
        """An empty list (nothing could be sent) or a wrong code fails at start-up."""
        with pytest.raises(ValueError, match="allowed_countries"):
            Settings(allowed_countries=value)


class TestGeoPermissions:
    @pytest.mark.parametrize(
        ("number", "region"),
        [("+14155552671", "US"), ("+4915112345678", "DE"), ("+447911123456", "GG"),
         ("+447400123456", "GB"), ("+33612345678", "FR")],
    )  # fmt: skip
    def test_default_countries_pass(self, number: str, region: str) -> None:
        """Numbers of the default countries pass and their region is returned."""
        assert GeoPermissions.for_key((), Settings()).check(number) == region

    @pytest.mark.parametrize(
        ("number", "named"),
        [(COMOROS, r"\+269… \(KM, Comoros\)"), ("+18765550123", r"\+1… \(JM, Jamaica\)"),
         ("+88213100000", r"\+882… \(001, no country\)")],
    )  # fmt: skip
    def test_other_countries_are_refused_by_name(self, number: str, named: str) -> None:
        """A refusal is a 422 on `to` naming the calling code and the country, not the number."""
        with pytest.raises(ValidationError, match=named) as raised:
            GeoPermissions.for_key((), Settings()).check(number)
        assert (raised.value.code, raised.value.field) == ("country_not_allowed", "to")
        assert "allowed countries" in raised.value.message
        assert number[4:] not in raised.value.message

    def test_a_keys_list_replaces_the_deployments(self) -> None:
        """A key allowed KM only may send to Comoros and no longer to the US."""
        geo = GeoPermissions.for_key(("KM",), Settings())
        assert geo.check(COMOROS) == "KM"
        with pytest.raises(ValidationError, match="US"):
            geo.check("+14155552671")

    def test_star_allows_every_country(self) -> None:
        """`*` (on the key or the deployment) allows numbers of no country too."""
        assert GeoPermissions.for_key(("*",), Settings()).check("+88213100000") == "001"
        everywhere = Settings(allowed_countries=["*"])
        assert GeoPermissions.for_key((), everywhere).check(COMOROS) == "KM"

    def test_region_and_description(self) -> None:
        """Regions come from phonenumbers; the description never holds the number."""
        assert region_of("+18765550123") == "JM"
        assert describe(COMOROS, "KM") == "+269… (KM, Comoros)"
