"""Tests for choosing and configuring a carrier adapter (`worker.carriers.registry`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest
from pydantic import SecretStr

from worker.carriers.adapters import adapter_for, register, type_names, unregister
from worker.carriers.base import ReceiptAuth, SegmentSubmission
from worker.carriers.config import single_carrier
from worker.carriers.http import HttpCarrier, HttpOptions
from worker.carriers.kannel import KannelCarrier
from worker.carriers.registry import build_carrier, carrier_for_name
from worker.carriers.routing import RoutedCarrier
from worker.carriers.sim import SimCarrier
from worker.carriers.smpp import SmppCarrier
from worker.carriers.twilio import TwilioCarrier
from worker.errors import NotFoundError
from worker.settings import Settings

SEGMENT = SegmentSubmission(
    message_id="m1",
    seq=1,
    total=1,
    to="+4915112345678",
    sender="smsq",
    udh=b"",
    payload=b"\x00h\x00i",
    data_coding=8,
    text="hi",
    full_text="hi",
    receipt_url="http://api.test/dlr",
)


@pytest.fixture
def requests() -> list[httpx.Request]:
    return []


@pytest.fixture
def client(requests: list[httpx.Request]) -> Iterator[httpx.Client]:
    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"carrier_id": "c1", "id": "c1"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        yield client


class TestBuildCarrier:
    def test_builds_the_simulator_by_default(
        self, client: httpx.Client, requests: list[httpx.Request]
    ) -> None:
        """`carrier=sim` submits to `<carrier_url>/submit`."""
        carrier = build_carrier(Settings(carrier_url="http://sim.test:9000"), client)
        assert isinstance(carrier, SimCarrier)
        carrier.submit(SEGMENT)
        assert str(requests[0].url) == "http://sim.test:9000/submit"

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://up.test:8000", "http://up.test:8000/sms/send"),
            ("http://up.test:8000/", "http://up.test:8000/sms/send"),
            ("http://up.test/v2/messages", "http://up.test/v2/messages"),
        ],
    )
    def test_http_posts_to_smsqs_send_endpoint_unless_told(
        self, client: httpx.Client, requests: list[httpx.Request], url: str, expected: str
    ) -> None:
        """A bare base URL means an upstream smsq's `/sms/send`; a path is used as given."""
        carrier = build_carrier(Settings(carrier="http", carrier_url=url), client)
        assert isinstance(carrier, HttpCarrier)
        carrier.submit(SEGMENT)
        assert str(requests[0].url) == expected
        assert json.loads(requests[0].content)["content"] == "hi"

    @pytest.mark.parametrize(
        ("username", "password", "expected"),
        [
            ("", "", None),
            ("", "sk_123", "Bearer sk_123"),
            ("user", "pw", "Basic dXNlcjpwdw=="),
        ],
    )
    def test_http_authenticates_from_settings(
        self,
        client: httpx.Client,
        requests: list[httpx.Request],
        username: str,
        password: str,
        expected: str | None,
    ) -> None:
        """A password alone is a bearer key (an upstream smsq); with a username, basic auth."""
        settings = Settings(
            carrier="http", carrier_username=username, carrier_password=SecretStr(password)
        )
        build_carrier(settings, client).submit(SEGMENT)
        assert requests[0].headers.get("authorization") == expected

    @pytest.mark.parametrize(
        ("name", "kind"), [("kannel", KannelCarrier), ("twilio", TwilioCarrier)]
    )
    def test_builds_kannel_and_twilio(
        self, client: httpx.Client, name: str, kind: type[KannelCarrier | TwilioCarrier]
    ) -> None:
        """`SMSQ_CARRIER=kannel|twilio` builds that adapter, named so."""
        carrier = build_carrier(Settings(carrier=name), client)
        assert isinstance(carrier, kind)
        assert carrier.name == name

    def test_limits_wrap_the_single_carrier(self, client: httpx.Client) -> None:
        """A shared rate limit guards the single carrier, under the carrier's own name."""
        redis_client = fakeredis.FakeRedis(decode_responses=True)
        carrier = build_carrier(Settings(carrier_rate=50), client, redis_client)
        assert isinstance(carrier, RoutedCarrier)
        assert carrier.name == "sim"
        gate = carrier.gates["sim"]
        assert gate.rate is not None
        assert gate.rate.rate == 50
        assert gate.breaker is not None
        assert gate.breaker.failures == 5

    def test_limits_need_redis(self, client: httpx.Client) -> None:
        """Shared limits without a Redis client are a configuration error."""
        with pytest.raises(ValueError, match="Redis"):
            build_carrier(Settings(carrier_concurrency=4), client)


class TestCarrierForName:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [("sim", SimCarrier), ("http", HttpCarrier), ("kannel", KannelCarrier),
         ("twilio", TwilioCarrier)],
    )  # fmt: skip
    def test_builds_by_name(self, client: httpx.Client, name: str, kind: type[object]) -> None:
        """Any supported carrier can be built by name, whatever `settings.carrier` says."""
        carrier = carrier_for_name(name, Settings(carrier="sim"), client)
        assert isinstance(carrier, kind)
        assert carrier.name == name

    def test_unknown_name_is_not_found(self, client: httpx.Client) -> None:
        """A name smsq does not know is NotFoundError (404 at `/carriers/{name}/dlr`)."""
        with pytest.raises(NotFoundError):
            carrier_for_name("acme", Settings(), client)


CARRIERS_TOML = """
max_wait = 0.25

[carriers.sim]
type = "sim"
url = "http://sim.test:9000"
rate = 20
burst = 2
concurrency = 8
breaker_failures = 3
breaker_cooldown = 5

[carriers.kannel-eu]
type = "kannel"
url = "http://kannel.test:13013"
username = "smsq"
password_file = "{secret}"
breaker_failures = 0

[carriers.twilio]
type = "twilio"
url = "https://api.twilio.test"
username = "AC123"
password = "token"

[[routes]]
prefixes = ["+49"]
carriers = ["kannel-eu", "twilio"]

[[routes]]
carriers = ["sim", "twilio"]
weights = [9, 1]
"""


@pytest.fixture
def carriers_file(tmp_path: Path) -> Path:
    secret = tmp_path / "kannel-password"
    secret.write_text("s3cret\n")
    path = tmp_path / "carriers.toml"
    path.write_text(CARRIERS_TOML.replace("{secret}", str(secret)))
    return path


class TestCarriersFile:
    def test_builds_a_routed_carrier(self, client: httpx.Client, carriers_file: Path) -> None:
        """Every carrier of the file behind one RoutedCarrier, with its limits and breaker."""
        settings = Settings(carriers_file=str(carriers_file))
        carrier = build_carrier(settings, client, fakeredis.FakeRedis(decode_responses=True))
        assert isinstance(carrier, RoutedCarrier)
        assert set(carrier.gates) == {"sim", "kannel-eu", "twilio"}
        sim = carrier.gates["sim"]
        assert sim.rate is not None
        assert (sim.rate.rate, sim.rate.burst) == (20, 2)
        assert sim.slots is not None
        assert sim.slots.limit == 8
        assert sim.breaker is not None
        assert (sim.breaker.failures, sim.breaker.cooldown) == (3, 5)
        assert carrier.gates["kannel-eu"].breaker is None
        assert carrier.table.order("+4930123", "m1") == ["kannel-eu", "twilio"]

    def test_names_every_carrier_for_receipts(
        self, client: httpx.Client, carriers_file: Path, requests: list[httpx.Request]
    ) -> None:
        """`carrier_for_name` builds each carrier of the file (password from its file)."""
        settings = Settings(carriers_file=str(carriers_file))
        kannel = carrier_for_name("kannel-eu", settings, client)
        assert isinstance(kannel, KannelCarrier)
        assert kannel.name == "kannel-eu"
        kannel.submit(SEGMENT)
        assert "password=s3cret&" in str(requests[0].url)
        assert isinstance(carrier_for_name("twilio", settings, client), TwilioCarrier)
        with pytest.raises(NotFoundError):
            carrier_for_name("http", settings, client)  # built in, but not configured

    @pytest.mark.parametrize(
        ("toml", "complaint"),
        [
            ("[carriers.a]\ntype='sim'\nurl='x'\n", "routes"),
            ("[carriers.a]\ntype='sms'\nurl='x'\n[[routes]]\ncarriers=['a']\n", "type"),
            ("[carriers.a]\ntype='sim'\nurl='x'\n[[routes]]\ncarriers=['b']\n", "unknown carriers"),
            ("[carriers.A]\ntype='sim'\nurl='x'\n[[routes]]\ncarriers=['A']\n", "must match"),
            ("[carriers.a]\ntype='sim'\nurl='x'\nrate=-1\n[[routes]]\ncarriers=['a']\n", "rate"),
            ("[carriers.a]\ntype='sim'\nurl='x'\n[[routes]]\ncarriers=['a']\nweights=[1,2]\n",
             "weights"),
            ("[carriers.a]\ntype='sim'\nurl='x'\n[[routes]]\ncarriers=['a']\nprefixes=['+4a']\n",
             "prefix"),
            ("[carriers.a]\ntype='sim'\nurl='x'\nextra=1\n[[routes]]\ncarriers=['a']\n", "extra"),
            ("[carriers.a]\ntype='sim'\nurl='x'\nsmsc='s'\n[[routes]]\ncarriers=['a']\n", "smsc"),
            ("[carriers.a]\ntype='twilio'\nurl='x'\ndlr_mask=3\n[[routes]]\ncarriers=['a']\n",
             "dlr_mask"),
            ("[carriers.a]\ntype='kannel'\n[[routes]]\ncarriers=['a']\n", "url"),
            ("[carriers.a\n", "carriers file"),
        ],
    )  # fmt: skip
    def test_bad_files_fail_loudly(
        self, client: httpx.Client, tmp_path: Path, toml: str, complaint: str
    ) -> None:
        """Unknown keys, types or carriers, bad numbers, broken TOML: ValueError, saying what."""
        path = tmp_path / "carriers.toml"
        path.write_text(toml)
        with pytest.raises(ValueError, match=complaint):
            build_carrier(Settings(carriers_file=str(path)), client, fakeredis.FakeRedis())

    @pytest.mark.parametrize(
        "table",
        [
            "type='kannel'\npassword='s3cret-pw'\n",  # no url
            "type='twilio'\nurl='x'\npassword='s3cret-pw'\nsmsc='s'\n",  # Kannel's key
            "type='kannel'\nurl='x'\npassword='s3cret-pw'\ndlr_mask=99\n",
        ],
    )
    def test_errors_do_not_show_passwords(
        self, client: httpx.Client, tmp_path: Path, table: str
    ) -> None:
        """What is wrong is said without echoing the table (passwords sit in it)."""
        path = tmp_path / "carriers.toml"
        path.write_text(f"[carriers.a]\n{table}[[routes]]\ncarriers=['a']\n")
        with pytest.raises(ValueError, match=r"carriers\.a\.options") as caught:
            build_carrier(Settings(carriers_file=str(path)), client, fakeredis.FakeRedis())
        assert "s3cret-pw" not in str(caught.value)

    def test_missing_file_fails_loudly(self, client: httpx.Client, tmp_path: Path) -> None:
        """A carriers file that is not there is a ValueError naming it."""
        with pytest.raises(ValueError, match=r"nowhere\.toml"):
            build_carrier(Settings(carriers_file=str(tmp_path / "nowhere.toml")), client)


class TestCatalogue:
    def test_lists_the_built_in_adapters(self) -> None:
        """Each built-in adapter class is registered under its type name."""
        assert type_names() == ("http", "kannel", "sim", "smpp", "twilio")
        assert [adapter_for(name) for name in ("sim", "http", "kannel", "twilio", "smpp")] == [
            SimCarrier, HttpCarrier, KannelCarrier, TwilioCarrier, SmppCarrier
        ]  # fmt: skip

    def test_unknown_types_are_named_with_the_known_ones(self) -> None:
        """`SMSQ_CARRIER` and the file's `type` say which types there are."""
        known = r"'ucp' \(known: http, kannel, sim, smpp, twilio\)"
        with pytest.raises(ValueError, match=known):
            Settings(carrier="ucp")

    def test_refuses_a_taken_type_name(self) -> None:
        """A second class cannot take a registered type name."""

        class Impostor(SimCarrier):
            pass

        with pytest.raises(TypeError, match="taken"):
            register(Impostor)
        assert adapter_for("sim") is SimCarrier

    def test_refuses_a_receipt_secret_without_its_option(self) -> None:
        """Signing with a `receipt_secret` goes with options that have one, and only with them."""

        class Unkeyed(KannelCarrier):
            type_name = "unkeyed"
            receipt_auth = ReceiptAuth.RECEIPT_SECRET

        class Keyed(HttpCarrier):
            type_name = "keyed"
            Options = HttpOptions
            receipt_auth = ReceiptAuth.TOKEN

        for adapter in (Unkeyed, Keyed):
            with pytest.raises(TypeError, match="receipt_secret"):
                register(adapter)
        assert "unkeyed" not in type_names()
        assert "keyed" not in type_names()

    def test_a_carrier_that_paces_itself_gets_no_shared_rate_limit(
        self, client: httpx.Client
    ) -> None:
        """Its `rate` is kept by its own process; concurrency and breaker still apply."""

        class SelfPaced(SimCarrier):
            type_name = "self-paced"
            paces_itself = True

        register(SelfPaced)
        try:
            settings = Settings(carrier="self-paced", carrier_rate=50, carrier_concurrency=2)
            carrier = build_carrier(settings, client, fakeredis.FakeRedis(decode_responses=True))
        finally:
            unregister("self-paced")
        assert isinstance(carrier, RoutedCarrier)
        gate = carrier.gates["self-paced"]
        assert (gate.rate, gate.slots is not None, gate.breaker is not None) == (None, True, True)


class TestSingleCarrier:
    @pytest.mark.parametrize(
        ("carrier", "keys"),
        [
            ("sim", {"url", "receipt_secret"}),
            ("http", {"url", "username", "password", "receipt_secret"}),
            ("kannel", {"url", "username", "password", "smsc", "dlr_mask"}),
            ("twilio", {"url", "username", "password", "messaging_service"}),
        ],
    )
    def test_takes_the_adapter_s_own_keys_from_settings(self, carrier: str, keys: set[str]) -> None:
        """`SMSQ_CARRIER_<KEY>` fills the options the adapter has (and only those)."""
        settings = Settings(
            carrier=carrier,
            carrier_url="http://c.test",
            carrier_username="u",
            carrier_password=SecretStr("p"),
            carrier_smsc="s1",
            carrier_dlr_mask=19,
            carrier_messaging_service="MG1",
            carrier_receipt_secret=SecretStr("whsec_" + "a" * 32),
            carrier_rate=5,
        )
        config = single_carrier(settings).carriers[carrier]
        assert config.rate == 5
        assert config.options.model_fields_set == keys
