"""Tests for choosing and configuring a carrier adapter (`worker.carriers.registry`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from worker.carriers.base import SegmentSubmission
from worker.carriers.http import HttpCarrier
from worker.carriers.registry import build_carrier, carrier_for_name
from worker.carriers.sim import SimCarrier
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

    @pytest.mark.parametrize("name", ["kannel", "twilio"])
    def test_refuses_carriers_without_an_adapter(self, client: httpx.Client, name: str) -> None:
        """Known carriers without an adapter yet fail loudly."""
        with pytest.raises(ValueError, match="not yet supported"):
            build_carrier(Settings(carrier=name), client)


class TestCarrierForName:
    @pytest.mark.parametrize(("name", "kind"), [("sim", SimCarrier), ("http", HttpCarrier)])
    def test_builds_by_name(
        self, client: httpx.Client, name: str, kind: type[SimCarrier | HttpCarrier]
    ) -> None:
        """Any supported carrier can be built by name, whatever `settings.carrier` says."""
        carrier = carrier_for_name(name, Settings(carrier="sim"), client)
        assert isinstance(carrier, kind)
        assert carrier.name == name

    def test_unknown_name_is_not_found(self, client: httpx.Client) -> None:
        """A name smsq does not know is NotFoundError (404 at `/carriers/{name}/dlr`)."""
        with pytest.raises(NotFoundError):
            carrier_for_name("acme", Settings(), client)
