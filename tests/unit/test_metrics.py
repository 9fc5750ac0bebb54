"""Metrics: the measuring carrier, task outcomes, Redis gauges, /metrics, /readyz, multiprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from producer.api import create_app
from producer.routes.metrics import count_otp
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.carriers.base import SegmentSubmission
from worker.carriers.sim import SimCarrier
from worker.errors import CarrierRejectedError, CarrierUnavailableError
from worker.metrics import StoreCollector, count_task, current_lane, measured, read_gauges
from worker.scheduler import LOCK_KEY
from worker.settings import Settings

Handler = Callable[[httpx.Request], httpx.Response]
REPO = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unasked() -> str:
    raise AssertionError("only a send asks for its carrier")


def segment() -> SegmentSubmission:
    return SegmentSubmission(
        message_id="m1", seq=1, total=1, to="+4915112345678", sender="smsq", udh=b"",
        payload=b"hi", data_coding=0, text="hi", full_text="hi",
        receipt_url="http://api.test/carriers/sim/dlr",
    )  # fmt: skip


def sim(answer: Handler) -> SimCarrier:
    return SimCarrier(httpx.Client(transport=httpx.MockTransport(answer)), "http://sim.test")


class TestMeasuredCarrier:
    def test_counts_an_accepted_segment_with_its_lane_and_time(self) -> None:
        """An accepted submission counts once under its lane and lands in the histogram."""
        carrier = measured(sim(lambda _: httpx.Response(200, json={"carrier_id": "c1"})))
        before = value("smsq_segments_total", state="accepted", lane="otp", carrier="sim")
        timed = value("smsq_carrier_request_seconds_count", carrier="sim", outcome="accepted")
        token = current_lane.set("otp")
        try:
            assert carrier.submit(segment()).carrier_id == "c1"
        finally:
            current_lane.reset(token)
        after = value("smsq_segments_total", state="accepted", lane="otp", carrier="sim")
        assert after == before + 1
        assert value("smsq_carrier_request_seconds_count", carrier="sim", outcome="accepted") == (
            timed + 1
        )

    @pytest.mark.parametrize(
        ("status", "error", "kind"),
        [
            (503, CarrierUnavailableError, "unavailable"),
            (400, CarrierRejectedError, "rejected"),
        ],
    )
    def test_counts_and_reraises_errors_by_kind(
        self, status: int, error: type[Exception], kind: str
    ) -> None:
        """A failed submission is counted by kind; the adapter's error still reaches the caller."""
        carrier = measured(sim(lambda _: httpx.Response(status, json={"error": "no"})))
        before = value("smsq_carrier_errors_total", carrier="sim", kind=kind)
        with pytest.raises(error):
            carrier.submit(segment())
        assert value("smsq_carrier_errors_total", carrier="sim", kind=kind) == before + 1

    def test_keeps_the_adapters_name_and_capabilities(self) -> None:
        """Name and the declared capabilities pass through."""
        inner = sim(lambda _: httpx.Response(200))
        carrier = measured(inner)
        assert (carrier.name, carrier.submits_whole_text) == (inner.name, inner.submits_whole_text)
        assert carrier.honours_client_ref is inner.honours_client_ref is True
        assert carrier.acknowledges_by_receipt is inner.acknowledges_by_receipt is False


class TestCountTask:
    def test_carrier_receipt_counts_are_parsed(self) -> None:
        """`applied=2 unchanged=1 unknown=0` adds 2 and 1 under the carrier."""
        labels = {"carrier": "kannel-test"}
        count_task("sms.carrier_dlr", ("kannel-test", {}), "applied=2 unchanged=1 unknown=0",
                   "SUCCESS", "carrier-dlr", carrier=unasked)  # fmt: skip
        assert value("smsq_carrier_receipts_applied_total", outcome="applied", **labels) == 2
        assert value("smsq_carrier_receipts_applied_total", outcome="unchanged", **labels) == 1
        assert value("smsq_carrier_receipts_applied_total", outcome="unknown", **labels) == 0

    def test_a_send_counts_under_its_carrier(self) -> None:
        """A send counts its message's state under its lane and the carrier it went to."""
        labels = {"state": "accepted", "lane": "otp", "carrier": "kannel-test"}
        before = value("smsq_messages_total", **labels)
        count_task("sms.send", ("m1",), "accepted", "SUCCESS", "otp", lambda: "kannel-test")
        assert value("smsq_messages_total", **labels) == before + 1

    def test_failed_tasks_count_only_their_state(self) -> None:
        """A task that raised counts under its state and nothing else."""
        before = value("smsq_tasks_total", task="sms.dlr.post", state="FAILURE")
        count_task("sms.dlr.post", ("m1", 1), RuntimeError("x"), "FAILURE", "dlr", unasked)
        assert value("smsq_tasks_total", task="sms.dlr.post", state="FAILURE") == before + 1


class TestOtpCounts:
    def test_sends_by_status_and_checks_by_answer(self) -> None:
        """/otp/send counts by outcome; /otp/verify by the status it answered."""
        sent = value("smsq_otp_sends_total", outcome="refused")
        approved = value("smsq_otp_verifications_total", status="approved")
        count_otp("/otp/send", "POST", 429, b"")
        count_otp("/otp/verify", "POST", 200, b'{"valid":true,"status":"approved"}')
        count_otp("/otp/verify", "POST", 200, b"not json")
        assert value("smsq_otp_sends_total", outcome="refused") == sent + 1
        assert value("smsq_otp_verifications_total", status="approved") == approved + 1


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


class TestGauges:
    def test_reads_queues_schedule_and_dead_letters(self, client: fakeredis.FakeRedis) -> None:
        """Queue lengths, the schedule (and what is overdue), the lock and dead letters."""
        client.lpush("otp", "a", "b")
        client.lpush("bulk", "c")
        client.zadd("smsq:schedule", {"late": 1, "later": 9_999_999_999_999})
        client.rpush("smsq:dlr:dead", "m1:1")
        client.set(LOCK_KEY, "x")
        gauges = read_gauges(client)
        assert (gauges.queues["otp"], gauges.queues["bulk"], gauges.queues["normal"]) == (2, 1, 0)
        assert (gauges.backlog, gauges.overdue, gauges.dead_letters) == (2, 1, 1)
        assert gauges.scheduler_up

    def test_collector_reports_open_breakers(self, client: fakeredis.FakeRedis) -> None:
        """A breaker open in Redis shows as state="open" for its carrier."""
        client.hset("smsq:carrier:acme:breaker", mapping={"open_until": str(2**52)})
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in StoreCollector(client).collect()
            for s in family.samples
        }
        key = ("smsq_carrier_breaker_state", (("carrier", "acme"), ("state", "open")))
        assert samples[key] == 1


@pytest.fixture
def services(client: fakeredis.FakeRedis) -> Services:
    return fake_services(client=client)


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as test_client:
        yield test_client


class TestEndpoints:
    def test_metrics_needs_no_key_and_labels_routes_by_template(
        self, api: TestClient, services: Services
    ) -> None:
        """/metrics is Prometheus text; requests count under their route, never a raw id."""
        key = services.keys.create("k").api_key
        api.get("/sms/00000000000000000000000000000abc", headers={"authorization": f"Bearer {key}"})
        reply = api.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        text = reply.text
        assert 'smsq_queue_depth{queue="otp"} 0.0' in text
        assert 'route="/sms/{message_id}"' in text
        assert "00000000000000000000000000000abc" not in text

    def test_readyz_needs_a_scheduler(self, api: TestClient, services: Services) -> None:
        """Without a scheduler holding its lock /readyz is 503 naming it; with one, 200."""
        down = api.get("/readyz")
        assert down.status_code == 503
        assert down.json()["checks"] == {"redis": True, "broker": True, "scheduler": False}
        services.redis.set(LOCK_KEY, "leader", px=10_000)
        assert api.get("/readyz").status_code == 200
        assert api.get("/healthz").json() == {"status": "ok"}


WORKER_SCRIPT = """
from worker import metrics
metrics.RECEIPT_ATTEMPTS.labels("sent").inc(3)
metrics.CARRIER_SECONDS.labels("sim", "accepted").observe(0.02)
"""
API_SCRIPT = """
import fakeredis
from worker import metrics
metrics.HTTP_REQUESTS.labels("/sms/send", "POST", "202").inc()
print(metrics.exposition(fakeredis.FakeRedis(decode_responses=True)).decode())
"""


class TestMultiprocess:
    def test_api_adds_up_every_process(self, tmp_path: Path) -> None:
        """Two worker processes and the API write files; /metrics' text sums them all."""
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
        for _ in range(2):
            subprocess.run([sys.executable, "-c", WORKER_SCRIPT], env=env, check=True, timeout=60)
        text = subprocess.run(
            [sys.executable, "-c", API_SCRIPT], env=env, check=True, timeout=60,
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert 'smsq_receipt_attempts_total{result="sent"} 6.0' in text
        assert 'smsq_carrier_request_seconds_count{carrier="sim",outcome="accepted"} 2.0' in text
        assert 'smsq_http_requests_total{method="POST",route="/sms/send",status="202"} 1.0' in text
        assert 'smsq_queue_depth{queue="bulk"} 0.0' in text
        assert json.dumps(str(tmp_path)) not in text


class TestMetricsToken:
    TOKEN = "scrape-me-0123456789"

    @pytest.fixture
    def guarded(self, client: fakeredis.FakeRedis) -> Iterator[TestClient]:
        services = fake_services(Settings(metrics_token=self.TOKEN), client=client)
        with TestClient(create_app(services=services)) as test_client:
            yield test_client

    @pytest.mark.parametrize(
        "header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "]
    )
    def test_without_the_token_it_is_401(self, guarded: TestClient, header: str | None) -> None:
        """With SMSQ_METRICS_TOKEN set, no token or a wrong one is 401 asking for a bearer."""
        headers = {"authorization": header} if header is not None else {}
        reply = guarded.get("/metrics", headers=headers)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json()["error"]["code"] == "unauthorized"
        assert "smsq_" not in reply.text

    def test_with_the_token_it_answers(self, guarded: TestClient) -> None:
        """The right bearer token gets the Prometheus text; health stays open."""
        reply = guarded.get("/metrics", headers={"authorization": f"Bearer {self.TOKEN}"})
        assert reply.status_code == 200
        assert "smsq_queue_depth" in reply.text
        assert guarded.get("/healthz").status_code == 200

    def test_without_a_token_setting_it_stays_open(self, api: TestClient) -> None:
        """By default /metrics needs nothing (a scrape port on the private network)."""
        assert api.get("/metrics").status_code == 200
