"""Adding a carrier is one module: a toy adapter, defined and registered here and nowhere else,
passes the conformance suite, is a choice of the carriers file and of `SMSQ_CARRIER`, is routed
to and sent through by the real Sender, has its receipts checked and parsed, and is probed by
`smsq carriers check`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import fakeredis
import httpx
import orjson
import pydantic
import pytest

from tests.unit.carrier_cases import CarrierCase, HttpStandIn, json_to
from tests.unit.test_carrier_conformance import Conformance
from tests.unit.test_sending import Publisher
from worker.carriers.adapters import register, unregister
from worker.carriers.base import (
    Accepted,
    AdapterContext,
    CarrierAdapter,
    CarrierReceipt,
    InboundRequest,
    Probe,
    SegmentSubmission,
)
from worker.carriers.config import load_carriers
from worker.carriers.health import check
from worker.carriers.options import HttpEndpoint, Password
from worker.carriers.registry import build_carrier, carrier_for_name
from worker.carriers.responses import (
    accepted_id,
    lookup,
    probe_http,
    receipt_fields,
    request,
    required_str,
)
from worker.contract import SegmentStatus
from worker.receipts.tokens import CallbackAuth
from worker.sending import Sender
from worker.settings import Settings, get_settings
from worker.store import Message, Store, new_message_id

# ---- the whole adapter: what a new carrier module holds ------------------------------------


class ToyOptions(HttpEndpoint, Password):
    """`[carriers.NAME]` of `type = "toy"`: the API's `url`, its key as `password`, a region."""

    region: str = "eu"


class ToyCarrier(CarrierAdapter[ToyOptions]):
    """A whole-text JSON API: `POST {url}/{region}/messages`; receipts come back as JSON."""

    type_name = "toy"
    Options = ToyOptions
    submits_whole_text = True

    STATES: ClassVar[dict[str, SegmentStatus]] = {
        "DELIVERED": SegmentStatus.DELIVERED,
        "FAILED": SegmentStatus.UNDELIVERED,
    }

    def __init__(self, client: httpx.Client, url: str, key: str, *, name: str) -> None:
        self.name = name
        self._client = client
        self._url = url.rstrip("/")
        self._auth = ("api", key)

    @classmethod
    def from_config(cls, name: str, options: ToyOptions, context: AdapterContext) -> Self:
        return cls(context.client, f"{options.url}/{options.region}", options.secret, name=name)

    @classmethod
    def probe(cls, options: ToyOptions, context: AdapterContext) -> Probe:
        return probe_http(context.client, f"{options.url}/health", auth=("api", options.secret))

    def submit(self, segment: SegmentSubmission) -> Accepted:
        body = {"to": segment.to, "text": segment.full_text, "callback": segment.receipt_url}
        response = request(
            self._client,
            "POST",
            f"{self._url}/messages",
            carrier=self.name,
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
            auth=self._auth,
        )
        return Accepted(carrier_id=accepted_id(response, "message.id", carrier=self.name))

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        return [
            CarrierReceipt(
                carrier_id=required_str(item, "message_id"),
                status=lookup(self.STATES, required_str(item, "state"), field="state"),
            )
            for item in receipt_fields(request)
        ]


# ---- its test data -------------------------------------------------------------------------


class ToyCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {"type": "toy", "url": "http://toy.test", "password": "k1"}

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"message": {"id": "toy-1"}})

    def receipt_url_given(self) -> str:
        return str(orjson.loads(self.last_submission().content)["callback"])

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return json_to(url, {"message_id": carrier_id, "state": "delivered"})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            json_to(url, {"state": "delivered"}),
            json_to(url, {"message_id": "t", "state": "?"}),
        ]


@pytest.fixture
def toy() -> Iterator[type[ToyCarrier]]:
    register(ToyCarrier)
    yield ToyCarrier
    unregister(ToyCarrier.type_name)


class TestToyConformance(Conformance):
    """The toy passes what every registered adapter passes."""

    @pytest.fixture
    def case(self, toy: type[ToyCarrier]) -> Iterator[CarrierCase]:
        case = ToyCase()
        yield case
        case.close()


# ---- the rest of smsq finds it -------------------------------------------------------------

PUBLIC = "http://api.test"
CARRIERS = """
[carriers.toy-eu]
type = "toy"
url = "http://toy.test"
password = "k1"
rate = 100

[carriers.sim]
type = "sim"
url = "http://sim.test"

[[routes]]
prefixes = ["+49"]
carriers = ["toy-eu"]

[[routes]]
carriers = ["sim"]
"""


class Network:
    """The toy API and the simulator on one MockTransport."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.client = httpx.Client(transport=httpx.MockTransport(self.answer))

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "toy.test":
            return httpx.Response(201, json={"message": {"id": "toy-1"}})
        return httpx.Response(200, json={"carrier_id": "sim-1"})

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]


@pytest.fixture
def network() -> Iterator[Network]:
    network = Network()
    yield network
    network.client.close()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "carriers.toml"
    path.write_text(CARRIERS)
    monkeypatch.setenv("SMSQ_SECRET_KEY", "plugin-test-key")  # receipt URLs carry tokens
    get_settings.cache_clear()
    return Settings(carriers_file=str(path), public_url=PUBLIC)


def send(store: Store, sender: Sender, to: str) -> str:
    message = Message(id=new_message_id(), to=to, sender="smsq", content="Code 123456", segments=1)
    store.create(message)
    assert sender.send(message.id).status == "accepted"
    return message.id


class TestToyCarrier:
    def test_is_a_choice_only_while_registered(self) -> None:
        """`SMSQ_CARRIER` and the file's `type` accept the toy once its class is registered."""
        with pytest.raises(pydantic.ValidationError, match="unknown carrier type 'toy'"):
            Settings(carrier="toy")
        register(ToyCarrier)
        try:
            assert Settings(carrier="toy").carrier == "toy"
        finally:
            unregister("toy")

    def test_routed_to_and_sent_through_by_the_sender(
        self, toy: type[ToyCarrier], settings: Settings, network: Network
    ) -> None:
        """The file routes +49 to the toy, the rest to the simulator; the real Sender, on a
        fake Redis, submits each message to its carrier and stores who took it."""
        redis = fakeredis.FakeRedis(decode_responses=True)
        store = Store(redis)
        sender = Sender(store, build_carrier(settings, network.client, redis), Publisher(), PUBLIC)
        to_toy = send(store, sender, "+4915112345678")
        to_sim = send(store, sender, "+14155552671")
        (segment,) = store.segments(to_toy, 1)
        assert (segment.carrier, segment.carrier_id) == ("toy-eu", "toy-1")
        assert store.segments(to_sim, 1)[0].carrier == "sim"
        (submitted,) = network.to("toy.test")
        assert submitted.url.path == "/eu/messages"
        body = orjson.loads(submitted.content)
        assert body["text"] == "Code 123456"
        assert body["callback"].startswith(f"{PUBLIC}/carriers/toy-eu/dlr?ref={to_toy}:1&token=")

    def test_its_receipts_are_checked_and_parsed(
        self, toy: type[ToyCarrier], settings: Settings, network: Network
    ) -> None:
        """The API lets its tokenised receipt in; the worker's adapter, built by name, reads it."""
        redis = fakeredis.FakeRedis(decode_responses=True)
        store = Store(redis)
        sender = Sender(store, build_carrier(settings, network.client, redis), Publisher(), PUBLIC)
        message_id = send(store, sender, "+4915112345678")
        callback = orjson.loads(network.to("toy.test")[0].content)["callback"]
        receipt = json_to(callback, {"message_id": "toy-1", "state": "delivered"})
        auth = CallbackAuth(load_carriers(settings), "plugin-test-key", PUBLIC)
        assert auth.check("toy-eu", receipt).ref == f"{message_id}:1"
        carrier = carrier_for_name("toy-eu", settings, network.client)
        assert carrier.parse_receipts(receipt) == [CarrierReceipt("toy-1", SegmentStatus.DELIVERED)]

    def test_is_probed_by_carriers_check(
        self, toy: type[ToyCarrier], settings: Settings, network: Network
    ) -> None:
        """`smsq carriers check` probes it like any carrier, and sends nothing."""
        healthy, lines = check(settings, network.client, None)
        assert healthy
        (line,) = [line for line in lines if line.startswith("  toy-eu ")]
        assert line.split()[1:3] == ["toy", "toy.test"]
        assert "reachable (201)" in line
        assert "  route +49: toy-eu" in lines
        assert [r.url.path for r in network.to("toy.test")] == ["/health"]

    def test_single_carrier_from_smsq_carrier_settings(
        self, toy: type[ToyCarrier], network: Network
    ) -> None:
        """`SMSQ_CARRIER=toy`: each of its options that is a setting (`SMSQ_CARRIER_URL`,
        `SMSQ_CARRIER_PASSWORD`) comes from it, the others keep their defaults."""
        settings = Settings(
            carrier="toy", carrier_url="http://toy.test", carrier_password=pydantic.SecretStr("k9")
        )
        carrier = build_carrier(settings, network.client)
        assert isinstance(carrier, ToyCarrier)
        assert carrier.name == "toy"
        carrier.submit(
            SegmentSubmission(
                message_id="m1", seq=1, total=1, to="+4915112345678", sender="smsq", udh=b"",
                payload=b"", data_coding=0, text="hi", full_text="hi",
                receipt_url=f"{PUBLIC}/carriers/toy/dlr",
            )
        )  # fmt: skip
        (submitted,) = network.to("toy.test")
        assert submitted.url.path == "/eu/messages"
        assert submitted.headers["authorization"] == httpx.BasicAuth("api", "k9")._auth_header

    def test_refuses_keys_it_does_not_have(self, toy: type[ToyCarrier], tmp_path: Path) -> None:
        """Another adapter's key (Kannel's `smsc`) in the toy's table is a loud error."""
        path = tmp_path / "carriers.toml"
        path.write_text(CARRIERS.replace('password = "k1"', 'password = "k1"\nsmsc = "x"'))
        with pytest.raises(ValueError, match="smsc"):
            load_carriers(Settings(carriers_file=str(path)))
