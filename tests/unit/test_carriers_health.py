"""Tests for `smsq carriers check` probes (`worker.carriers.health`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import fakeredis
import httpx
import pytest
from pydantic import SecretStr

from worker.breaker import CircuitBreaker
from worker.carriers.config import CarrierConfig
from worker.carriers.health import Probe, check, probe
from worker.settings import Settings


@pytest.fixture
def seen() -> list[httpx.Request]:
    return []


def client_answering(status: int, seen: list[httpx.Request]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text="x")

    return httpx.Client(transport=httpx.MockTransport(answer))


class TestProbe:
    @pytest.mark.parametrize(
        ("config", "url"),
        [
            (CarrierConfig(type="sim", url="http://s.test"), "http://s.test/stats"),
            (
                CarrierConfig(type="kannel", url="http://k.test:13013", username="u",
                              password=SecretStr("p w")),
                "http://k.test:13013/cgi-bin/sendsms?username=u&password=p+w",
            ),
            (
                CarrierConfig(type="twilio", url="https://t.test/", username="AC1",
                              password=SecretStr("tok")),
                "https://t.test/2010-04-01/Accounts/AC1.json",
            ),
            (CarrierConfig(type="http", url="http://h.test/sms/send"), "http://h.test/sms/send"),
        ],
    )  # fmt: skip
    def test_asks_something_harmless(
        self, seen: list[httpx.Request], config: CarrierConfig, url: str
    ) -> None:
        """Each type gets its cheapest request (a GET: nothing is sent)."""
        with client_answering(200, seen) as client:
            assert probe(config, client).ok
        assert (seen[0].method, str(seen[0].url)) == ("GET", url)

    @pytest.mark.parametrize(
        ("status", "ok", "detail"),
        [(200, True, "reachable"), (400, True, "reachable"), (404, True, "reachable"),
         (401, False, "credentials refused"), (403, False, "credentials refused"),
         (503, False, "answers 503")],
    )  # fmt: skip
    def test_classifies_answers(
        self, seen: list[httpx.Request], status: int, ok: bool, detail: str
    ) -> None:
        """4xx other than 401/403 still means reachable (Kannel: no recipient given)."""
        config = CarrierConfig(type="kannel", url="http://k.test", username="u")
        with client_answering(status, seen) as client:
            result = probe(config, client)
        assert (result.ok, detail in result.detail) == (ok, True)

    def test_unreachable(self) -> None:
        """A connect error is down."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        with httpx.Client(transport=httpx.MockTransport(fail)) as client:
            result = probe(CarrierConfig(type="sim", url="http://s.test"), client)
        assert not result.ok
        assert "unreachable" in result.detail


class TestCheck:
    @pytest.fixture
    def client(self, seen: list[httpx.Request]) -> Iterator[httpx.Client]:
        with client_answering(200, seen) as client:
            yield client

    def test_reports_carriers_limits_breakers(self, client: httpx.Client) -> None:
        """One line per carrier (host only), its limits and breaker state, then the routes."""
        store = fakeredis.FakeRedis(decode_responses=True)
        breaker = CircuitBreaker(store, "smsq:carrier:sim:breaker", failures=1)
        breaker.failure()
        settings = Settings(carrier_url="http://user:pw@sim.test:8025/x?k=secret", carrier_rate=5)
        healthy, lines = check(settings, client, store)
        assert healthy
        assert "from SMSQ_CARRIER*" in lines[0]
        assert "sim.test:8025" in lines[1]
        assert "secret" not in "\n".join(lines)
        assert "pw" not in "\n".join(lines)
        assert "5/s burst 1" in lines[1]
        assert "open" in lines[1]
        assert lines[-1] == "  route default: sim"


class TestSmppProbe:
    def test_an_smsc_is_probed_by_connecting(self, seen: list[httpx.Request]) -> None:
        """No HTTP request, no bind: the SMSC's port accepts a connection, or not."""
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        smpp = {"type": "smpp", "host": "127.0.0.1", "port": port, "system_id": "smsq"}
        with client_answering(200, seen) as client:
            assert probe(CarrierConfig.model_validate(smpp), client) == Probe(True, "port open")
            listener.close()
            down = probe(CarrierConfig.model_validate(smpp), client)
        assert (down.ok, seen) == (False, [])
