"""An SMPP carrier in the carriers file: its keys, checked when loaded; who runs its connector."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import fakeredis
import httpx
import pytest
from pydantic import ValidationError

from producer.up import UpOptions, children
from worker.carriers.base import AdapterContext
from worker.carriers.config import CarriersConfig, load_carriers
from worker.carriers.health import check
from worker.carriers.registry import build_carrier, carrier_for_name
from worker.carriers.routing import RoutedCarrier
from worker.carriers.smpp import SmppCarrier, smpp_carriers
from worker.settings import Settings
from worker.smpp.config import SmppConfig

# A full SMPP carrier section, as an operator writes it.
EXAMPLE = """
[carriers.upstream]
type = "smpp"
host = "127.0.0.1"
port = 2775
system_id = "smsq"
password = "secret"
bind = "transceiver"
binds = 2
window = 10
rate = 100

[[routes]]
carriers = ["upstream"]
"""


def parse(text: str) -> CarriersConfig:
    return CarriersConfig.model_validate(tomllib.loads(text))


def upstream(text: str) -> SmppConfig:
    """The options of carrier `upstream` in `text`."""
    return smpp_carriers(parse(text))["upstream"]


def with_keys(**keys: object) -> str:
    """The example with `keys` set (replacing the example's own)."""
    kept = [line for line in EXAMPLE.splitlines() if line.split(" = ")[0] not in keys]
    added = [f"{key} = {value!r}".replace("'", '"') for key, value in keys.items()]
    at = kept.index("rate = 100") + 1
    return "\n".join(kept[:at] + added + kept[at:])


class TestSmppConfig:
    def test_the_example_loads(self) -> None:
        """The documented keys: host, port, system_id, password, bind, binds, window, rate."""
        carrier = parse(EXAMPLE).carriers["upstream"]
        smpp = upstream(EXAMPLE)
        assert (carrier.adapter, carrier.options) == (SmppCarrier, smpp)
        assert (smpp.host, smpp.port, smpp.system_id) == ("127.0.0.1", 2775, "smsq")
        assert (smpp.bind, smpp.binds, smpp.window) == ("transceiver", 2, 10)
        assert (smpp.secret, carrier.rate, smpp.address) == ("secret", 100, "127.0.0.1:2775")
        assert (smpp.long_text, smpp.enquire_link, smpp.id_bases) == ("udh", 30, ("text", "text"))

    @pytest.mark.parametrize(
        "bind", ["transmitter + receiver", ["transmitter", "receiver"], ["receiver", "transmitter"]]
    )
    def test_a_transmitter_and_a_receiver(self, bind: object) -> None:
        """A pair per bind, written either way."""
        assert upstream(with_keys(bind=bind)).transmits_alone

    @pytest.mark.parametrize(
        ("keys", "complaint"),
        [
            ({"windo": 3}, "windo"),
            ({"long_text": "split"}, "long_text"),
            ({"binds": 0}, "binds"),
            ({"id_bases": ["hex", "text"]}, "id_bases"),
            ({"source_ton": 9}, "source_ton"),
        ],
    )  # fmt: skip
    def test_mistakes_are_loud(self, keys: dict[str, object], complaint: str) -> None:
        """An unknown key or a bad value stops loading, naming it."""
        with pytest.raises(ValidationError, match=complaint):
            parse(with_keys(**keys))

    def test_a_transmitter_alone_is_refused(self) -> None:
        """It would never hear a receipt: the error says what to write instead."""
        with pytest.raises(ValidationError, match="transmitter \\+ receiver"):
            parse(EXAMPLE.replace('"transceiver"', '"transmitter"'))

    def test_smpp_keys_belong_to_smpp_carriers(self) -> None:
        """`host` on a Kannel carrier is an unknown key; an SMPP carrier has no url."""
        with pytest.raises(ValidationError, match=r"host, .*system_id.*: not for a kannel"):
            parse(EXAMPLE.replace('type = "smpp"', 'type = "kannel"'))
        with pytest.raises(ValidationError, match="url: not for a smpp"):
            parse(with_keys(url="http://smsc.test"))

    @pytest.mark.parametrize(("long_text", "whole"), [("payload", True), ("udh", False)])
    def test_message_payload_takes_whole_texts(self, long_text: str, whole: bool) -> None:
        """With `long_text = "payload"` the SMSC cuts the text: whole texts are submitted."""
        options = upstream(with_keys(long_text=long_text))
        with httpx.Client() as client:
            context = AdapterContext(client=client, settings=Settings(), redis=None)
            carrier = SmppCarrier.from_config("upstream", options, context)
        assert carrier.submits_whole_text is whole


class TestSmppWiring:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        path = tmp_path / "carriers.toml"
        path.write_text(EXAMPLE)
        return Settings(carriers_file=str(path))

    def test_workers_queue_for_the_connector(self, settings: Settings) -> None:
        """The worker's carrier routes to the SMPP adapter, without a worker-side rate limit
        (the connector counts the rate in PDUs)."""
        with httpx.Client() as client:
            carrier = build_carrier(settings, client, fakeredis.FakeRedis())
            assert isinstance(carrier, RoutedCarrier)
            gate = carrier.gates["upstream"]
            assert isinstance(gate.carrier, SmppCarrier)
            assert gate.rate is None
            assert isinstance(carrier_for_name("upstream", settings, client), SmppCarrier)

    def test_smsq_up_runs_the_connector(self, settings: Settings) -> None:
        """An SMPP carrier configured: `smsq up` adds the `smpp` child; none: no child."""
        assert children(settings, UpOptions(), 7)[-1].name == "smpp"
        assert children(settings, UpOptions(), 7)[-1].command[-1] == "smpp"
        assert "smpp" not in [c.name for c in children(Settings(), UpOptions(), 7)]
        assert list(smpp_carriers(load_carriers(settings))) == ["upstream"]

    def test_smsq_carriers_check_connects_to_the_smsc(self, tmp_path: Path) -> None:
        """The probe opens a TCP connection to host:port (no bind, no SMS); the line names
        where, never the password."""
        with socket.create_server(("127.0.0.1", 0)) as smsc, httpx.Client() as client:
            port = smsc.getsockname()[1]
            path = tmp_path / "carriers.toml"
            path.write_text(EXAMPLE.replace("port = 2775", f"port = {port}"))
            healthy, lines = check(Settings(carriers_file=str(path)), client, None)
        assert healthy
        assert f"upstream         smpp    127.0.0.1:{port}" in lines[1]
        assert "port open" in lines[1]
        assert "secret" not in "\n".join(lines)
