"""Tests for the carrier simulator, served for real by uvicorn on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
import typer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from tests.servers import serve_app
from worker.carriers.base import InboundRequest, SegmentSubmission
from worker.carriers.sim import SimCarrier
from worker.contract import SegmentStatus
from worker.errors import CarrierRejectedError, CarrierUnavailableError
from worker.receipts.tokens import is_signed_by
from worker.simulator import SimulatorConfig, carrier_sim, create_simulator_app
from worker.simulator.cli import scenario_config
from worker.webhooks import generate_secret

TIMEOUT = httpx.Timeout(5.0, connect=2.0)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)


def pack_gsm(text: str, fill_bits: int = 0) -> bytes:
    """Pack GSM 7-bit septets (ASCII letters, digits and space share their codes) LSB first."""
    value, width = 0, fill_bits
    for char in text:
        value |= ord(char) << width
        width += 7
    return value.to_bytes((width + 7) // 8, "little")


def udh(reference: int, total: int, seq: int) -> bytes:
    """A concatenation UDH with an 8-bit reference."""
    return bytes([5, 0, 3, reference, total, seq])


def make_segment(
    text: str,
    *,
    seq: int = 1,
    total: int = 1,
    header: bytes = b"",
    payload: bytes | None = None,
    data_coding: int = 8,
    to: str = "+4915112345678",
    receipt_url: str = "",
    message_id: str = "m1",
) -> SegmentSubmission:
    return SegmentSubmission(
        message_id=message_id,
        seq=seq,
        total=total,
        to=to,
        sender="smsq",
        udh=header,
        payload=text.encode("utf-16-be") if payload is None else payload,
        data_coding=data_coding,
        text=text,
        full_text=text,
        receipt_url=receipt_url,
        want_receipt=bool(receipt_url),
    )


@dataclass
class Simulator:
    """A served simulator, an adapter pointed at it and a client to read its stats."""

    url: str
    client: httpx.Client
    carrier: SimCarrier

    def stats(self) -> dict[str, object]:
        body: dict[str, object] = self.client.get(f"{self.url}/stats").json()
        return body


@contextmanager
def simulator(config: SimulatorConfig | None = None) -> Iterator[Simulator]:
    with (
        serve_app(create_simulator_app(config)) as url,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        yield Simulator(url, client, SimCarrier(client, url))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with simulator() as served:
        yield served


@dataclass
class Receiver:
    """A receipt endpoint that fails its first `failures` requests with 500."""

    url: str = ""
    received: list[bytes] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.monotonic() of each received
    failures: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    async def dlr(request: Request) -> Response:
        if state.failures > 0:
            state.failures -= 1
            return Response(status_code=500)
        state.received.append(await request.body())
        state.arrived.append(time.monotonic())
        return Response(status_code=204)

    with serve_app(Starlette(routes=[Route("/dlr", dlr, methods=["POST"])])) as url:
        state.url = f"{url}/dlr"
        yield state


class TestSubmit:
    def test_accepts_and_records_a_single_segment(self, sim: Simulator) -> None:
        """A UCS-2 segment gets a `sim-<hex>` id and is recorded as a complete message."""
        accepted = sim.carrier.submit(make_segment("Grüße 👋"))
        assert accepted.carrier_id.startswith("sim-")
        assert len(accepted.carrier_id) == 4 + 32
        stats = sim.stats()
        assert stats["submissions"] == 1
        assert stats["by_client_ref"] == {"m1:1": 1}
        assert stats["duplicates"] == []
        assert stats["mismatches"] == []
        assert stats["messages"] == [
            {"to": "+4915112345678", "from": "smsq", "text": "Grüße 👋", "segments": 1,
             "data_coding": 8}
        ]  # fmt: skip

    def test_reports_duplicate_client_refs(self, sim: Simulator) -> None:
        """A segment submitted twice shows up once in `duplicates`, with its count."""
        for _ in range(3):
            sim.carrier.submit(make_segment("hi"))
        sim.carrier.submit(make_segment("hi", message_id="m2"))
        stats = sim.stats()
        assert stats["submissions"] == 4
        assert stats["by_client_ref"] == {"m1:1": 3, "m2:1": 1}
        assert stats["duplicates"] == ["m1:1"]

    def test_reassembles_ucs2_parts_in_any_order(self, sim: Simulator) -> None:
        """Two UCS-2 parts sent last-first become one message once both arrived."""
        first, second = "Ваш код: 1234, ", "не сообщайте его"
        sim.carrier.submit(make_segment(second, seq=2, total=2, header=udh(7, 2, 2)))
        assert sim.stats()["messages"] == []
        assert sim.stats()["pending_parts"] == 1
        sim.carrier.submit(make_segment(first, seq=1, total=2, header=udh(7, 2, 1)))
        stats = sim.stats()
        assert stats["messages"] == [
            {"to": "+4915112345678", "from": "smsq", "text": first + second, "segments": 2,
             "data_coding": 8}
        ]  # fmt: skip
        assert stats["pending_parts"] == 0

    def test_keeps_messages_apart_by_destination(self, sim: Simulator) -> None:
        """The same reference to two numbers is two messages."""
        for to in ("+4915100000001", "+4915100000002"):
            for seq in (1, 2):
                sim.carrier.submit(
                    make_segment(f"{to[-1]}{seq}", seq=seq, total=2, header=udh(9, 2, seq), to=to)
                )
        texts = sorted(str(m["text"]) for m in sim.stats()["messages"])  # type: ignore[attr-defined]
        assert texts == ["1112", "2122"]

    def test_decodes_gsm_parts(self, sim: Simulator) -> None:
        """GSM 7-bit parts after a 6-byte UDH (one fill bit) decode and reassemble."""
        parts = ["Your code is ", "123456"]
        for seq, text in enumerate(parts, start=1):
            sim.carrier.submit(
                make_segment(
                    text,
                    seq=seq,
                    total=2,
                    header=udh(200, 2, seq),
                    payload=pack_gsm(text, fill_bits=1),
                    data_coding=0,
                )
            )
        sim.carrier.submit(make_segment("Hello", payload=pack_gsm("Hello"), data_coding=0))
        texts = [m["text"] for m in sim.stats()["messages"]]  # type: ignore[attr-defined]
        assert texts == ["Your code is 123456", "Hello"]

    def test_reports_text_that_does_not_match_the_payload(self, sim: Simulator) -> None:
        """A segment whose payload decodes to other than its `text` is listed in `mismatches`."""
        sim.carrier.submit(make_segment("hi", payload="ho".encode("utf-16-be")))
        stats = sim.stats()
        assert stats["mismatches"] == ["m1:1"]
        assert stats["messages"][0]["text"] == "ho"  # type: ignore[index]

    @pytest.mark.parametrize(("payload", "data_coding"), [(b"\x00h\x00", 8), (b"\x00h", 4)])
    def test_refuses_payloads_that_do_not_decode(
        self, sim: Simulator, payload: bytes, data_coding: int
    ) -> None:
        """A payload that does not decode under its coding is 400 `bad_payload`."""
        segment = make_segment("h", payload=payload, data_coding=data_coding)
        with pytest.raises(CarrierRejectedError) as caught:
            sim.carrier.submit(segment)
        assert caught.value.code == "bad_payload"
        assert sim.stats()["submissions"] == 0

    @pytest.mark.parametrize(
        "body",
        [
            b"{",
            b"[]",
            b'{"to": "+1", "from": "x", "payload": "zz", "data_coding": 8, "client_ref": "a:1"}',
            b'{"to": "+1", "from": "x", "payload": "00", "data_coding": "8", "client_ref": "a:1"}',
            b'{"to": "", "from": "x", "payload": "0068", "data_coding": 8, "client_ref": "a:1"}',
        ],
    )
    def test_refuses_malformed_bodies(self, sim: Simulator, body: bytes) -> None:
        """Bad JSON, bad hex, wrong types or empty fields are 400 `bad_request`."""
        response = sim.client.post(f"{sim.url}/submit", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"

    def test_reset_forgets_everything(self, sim: Simulator) -> None:
        """`POST /reset` zeroes every counter."""
        sim.carrier.submit(make_segment("hi"))
        sim.client.post(f"{sim.url}/reset").raise_for_status()
        stats = sim.stats()
        assert (stats["submissions"], stats["by_client_ref"], stats["messages"]) == (0, {}, [])


class TestScripted:
    def test_fails_with_503(self) -> None:
        """`error_rate_5xx=1` answers every submission 503, counted as an error."""
        with simulator(SimulatorConfig(error_rate_5xx=1.0)) as sim:
            with pytest.raises(CarrierUnavailableError) as caught:
                sim.carrier.submit(make_segment("hi"))
            assert caught.value.status_code == 503
            stats = sim.stats()
        assert stats["submissions"] == 0
        assert stats["errors"] == {"unavailable": 1}

    def test_throttles_with_retry_after(self) -> None:
        """`error_rate_429=1` answers 429 with the configured Retry-After."""
        config = SimulatorConfig(error_rate_429=1.0, retry_after=3)
        with simulator(config) as sim, pytest.raises(CarrierUnavailableError) as caught:
            sim.carrier.submit(make_segment("hi"))
        assert (caught.value.status_code, caught.value.retry_after) == (429, 3.0)

    def test_rejects_destinations_by_prefix(self) -> None:
        """Numbers under a reject prefix are 400 `invalid_destination`; others pass."""
        with simulator(SimulatorConfig(reject_prefixes=("+999", "+1555"))) as sim:
            with pytest.raises(CarrierRejectedError) as caught:
                sim.carrier.submit(make_segment("hi", to="+15550100"))
            assert caught.value.code == "invalid_destination"
            sim.carrier.submit(make_segment("hi", to="+15560100"))
            assert sim.stats()["submissions"] == 1

    def test_seed_repeats_outcomes(self) -> None:
        """The same seed gives the same sequence of scripted failures."""

        def outcomes() -> list[bool]:
            with simulator(SimulatorConfig(error_rate_5xx=0.5, seed=42)) as sim:
                results = []
                for seq in range(1, 21):
                    try:
                        sim.carrier.submit(make_segment("x", seq=seq, total=20))
                        results.append(True)
                    except CarrierUnavailableError:
                        results.append(False)
                return results

        first = outcomes()
        assert first == outcomes()
        assert 0 < sum(first) < 20

    def test_latency_does_not_serialise_requests(self) -> None:
        """Ten concurrent submissions with 300 ms latency take about 300 ms, not 3 s."""
        with simulator(SimulatorConfig(latency_ms=300)) as sim, ThreadPoolExecutor(10) as pool:
            started = time.monotonic()
            segments = [make_segment("x", message_id=f"m{n}") for n in range(10)]
            list(pool.map(sim.carrier.submit, segments))
            elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.5


class TestReceipts:
    def test_sends_a_terminal_receipt(self, receiver: Receiver) -> None:
        """A receipt the sim adapter parses as DELIVERED reaches the receipt URL."""
        with simulator(SimulatorConfig(receipt_delay=0.05)) as sim:
            accepted = sim.carrier.submit(make_segment("hi", receipt_url=receiver.url))
            wait_for(lambda: len(receiver.received) == 1)
            wait_for(lambda: sim.stats()["receipts_sent"] == 1)
            assert sim.stats()["receipt_requests"] == 1
        body = receiver.received[0]
        assert body.startswith(b"{")  # one receipt per request, a JSON object, by default
        request = InboundRequest("POST", receiver.url, {}, {}, body)
        (receipt,) = sim.carrier.parse_receipts(request)
        assert receipt.carrier_id == accepted.carrier_id
        assert receipt.status is SegmentStatus.DELIVERED
        assert receipt.error_code is None
        assert receipt.done_at is not None
        assert datetime.fromisoformat(receipt.done_at).utcoffset() is not None

    @pytest.mark.parametrize(
        ("config", "status"),
        [
            (SimulatorConfig(receipt_delay=0, undelivered_ratio=1.0), SegmentStatus.UNDELIVERED),
            (SimulatorConfig(receipt_delay=0, expired_ratio=1.0), SegmentStatus.EXPIRED),
        ],
    )
    def test_scripted_final_states(
        self, receiver: Receiver, config: SimulatorConfig, status: SegmentStatus
    ) -> None:
        """The undelivered and expired ratios decide the receipt's state."""
        with simulator(config) as sim:
            sim.carrier.submit(make_segment("hi", receipt_url=receiver.url))
            wait_for(lambda: len(receiver.received) == 1)
        request = InboundRequest("POST", receiver.url, {}, {}, receiver.received[0])
        (receipt,) = sim.carrier.parse_receipts(request)
        assert receipt.status is status
        assert receipt.error_code is not None

    def test_retries_a_failed_receipt(self, receiver: Receiver) -> None:
        """A 5xx from the receipt URL is retried, then counted as sent."""
        receiver.failures = 2
        with simulator(SimulatorConfig(receipt_delay=0, receipt_attempts=3)) as sim:
            sim.carrier.submit(make_segment("hi", receipt_url=receiver.url))
            wait_for(lambda: sim.stats()["receipts_sent"] == 1)
            assert sim.stats()["receipts_failed"] == 0
        assert len(receiver.received) == 1

    def test_drops_a_receipt_after_its_attempts(self, receiver: Receiver) -> None:
        """After `receipt_attempts` failures the receipt is dropped and counted."""
        receiver.failures = 5
        with simulator(SimulatorConfig(receipt_delay=0, receipt_attempts=2)) as sim:
            sim.carrier.submit(make_segment("hi", receipt_url=receiver.url))
            wait_for(lambda: sim.stats()["receipts_failed"] == 1)
            assert sim.stats()["receipts_sent"] == 0
        assert receiver.failures == 3

    def test_sends_nothing_without_a_receipt_url(self, receiver: Receiver) -> None:
        """No receipt URL, no receipt; reset drops receipts still waiting."""
        # A delay long enough for the reset to come first on a loaded machine.
        with simulator(SimulatorConfig(receipt_delay=1.5)) as sim:
            sim.carrier.submit(make_segment("a"))
            sim.carrier.submit(make_segment("b", message_id="m2", receipt_url=receiver.url))
            sim.client.post(f"{sim.url}/reset").raise_for_status()
            time.sleep(1.6)  # past the receipt's due time
            assert sim.stats()["receipts_sent"] == 0
        assert receiver.received == []


class TestBatchedReceipts:
    """`receipt_batch` > 1: receipts due for one URL go together as a JSON list."""

    @staticmethod
    def submit(sim: Simulator, url: str, count: int) -> set[str]:
        return {
            sim.carrier.submit(make_segment("hi", message_id=f"m{i}", receipt_url=url)).carrier_id
            for i in range(count)
        }

    @staticmethod
    def parsed(sim: Simulator, url: str, body: bytes) -> list[tuple[str, SegmentStatus]]:
        receipts = sim.carrier.parse_receipts(InboundRequest("POST", url, {}, {}, body))
        return [(receipt.carrier_id, receipt.status) for receipt in receipts]

    def test_up_to_n_per_request_and_the_rest_after_the_window(self, receiver: Receiver) -> None:
        """12 receipts, batches of 5: two full lists at once, the last 2 when the window ends;
        each is a list the sim adapter parses."""
        config = SimulatorConfig(receipt_delay=0.3, receipt_batch=5, receipt_batch_window_ms=800)
        with simulator(config) as sim:
            started = time.monotonic()
            ids = self.submit(sim, receiver.url, 12)
            wait_for(lambda: sim.stats()["receipts_sent"] == 12)
            stats = sim.stats()
        assert (stats["receipt_requests"], stats["receipts_failed"]) == (3, 0)
        bodies = [self.parsed(sim, receiver.url, body) for body in receiver.received]
        assert [len(body) for body in bodies] == [5, 5, 2]
        # The last two waited for the window: due 0.3 s after their submission at the
        # earliest, sent 0.8 s after that (a slow machine only makes them later).
        assert receiver.arrived[2] - started >= 0.3 + 0.8 - 0.01
        received = [item for body in bodies for item in body]
        assert len(received) == 12
        assert {cid for cid, _ in received} == ids
        assert {status for _, status in received} == {SegmentStatus.DELIVERED}
        assert all(body.startswith(b"[") for body in receiver.received)

    def test_a_failed_batch_is_retried_whole(self, receiver: Receiver) -> None:
        """A 5xx is retried with the same list; receipts count as sent once it arrives."""
        receiver.failures = 1
        config = SimulatorConfig(receipt_delay=0.1, receipt_batch=3, receipt_batch_window_ms=500)
        with simulator(config) as sim:
            ids = self.submit(sim, receiver.url, 3)
            wait_for(lambda: sim.stats()["receipts_sent"] == 3)
            stats = sim.stats()
        assert (stats["receipt_requests"], stats["receipts_failed"]) == (2, 0)
        (body,) = receiver.received
        assert {cid for cid, _ in self.parsed(sim, receiver.url, body)} == ids

    def test_a_batch_is_dropped_after_its_attempts(self, receiver: Receiver) -> None:
        """Every receipt of a batch that never got through counts as failed."""
        receiver.failures = 5
        config = SimulatorConfig(
            receipt_delay=0, receipt_attempts=2, receipt_batch=10, receipt_batch_window_ms=50
        )
        with simulator(config) as sim:
            self.submit(sim, receiver.url, 3)
            wait_for(lambda: sim.stats()["receipts_failed"] == 3)
            stats = sim.stats()
        assert (stats["receipts_sent"], stats["receipt_requests"]) == (0, 2)
        assert receiver.received == []

    def test_reset_drops_receipts_waiting_in_a_batch(self, receiver: Receiver) -> None:
        """Receipts not yet due and those due but waiting for their batch are both dropped."""
        # A window long enough for the reset to come within it on a loaded machine.
        config = SimulatorConfig(receipt_delay=0, receipt_batch=10, receipt_batch_window_ms=1500)
        with simulator(config) as sim:
            self.submit(sim, receiver.url, 2)
            time.sleep(0.1)  # due, waiting for the window
            sim.client.post(f"{sim.url}/reset").raise_for_status()
            time.sleep(1.6)  # past the end of a window that began before the reset
            assert sim.stats()["receipt_requests"] == 0
        assert receiver.received == []

    def test_the_cli_takes_the_batch_size(self) -> None:
        """`--receipt-batch` reaches the config; 0 is a usage error."""
        flags = {"receipt_batch": 50, "receipt_batch_window_ms": 20.0}
        config = scenario_config(None, flags)
        assert (config.receipt_batch, config.receipt_batch_window_ms) == (50, 20.0)
        app = typer.Typer()
        app.command()(carrier_sim)
        result = CliRunner().invoke(app, ["--receipt-batch", "0"])
        assert result.exit_code == 2
        assert "receipt_batch" in result.output


@dataclass
class Seen:
    """Receipt requests as received: URL, headers, body."""

    requests: list[InboundRequest] = field(default_factory=list)


@pytest.fixture
def seen() -> Iterator[tuple[str, Seen]]:
    state = Seen()

    async def dlr(request: Request) -> Response:
        state.requests.append(
            InboundRequest(
                "POST", str(request.url), dict(request.query_params), dict(request.headers),
                await request.body(),
            )
        )  # fmt: skip
        return Response(status_code=204)

    with serve_app(Starlette(routes=[Route("/dlr", dlr, methods=["POST"])])) as url:
        yield f"{url}/dlr", state


class TestSignedReceipts:
    """`receipt_secret`: every receipt request signed per Standard Webhooks; batches group by
    the URL's path, so one request carries receipts of many segments."""

    SECRET = generate_secret()

    @staticmethod
    def submit(sim: Simulator, url: str, count: int) -> set[str]:
        return {
            sim.carrier.submit(
                make_segment("hi", message_id=f"m{i}", receipt_url=f"{url}?ref=m{i}:1&token=t{i}")
            ).carrier_id
            for i in range(count)
        }

    def test_a_signed_batch_spans_segments(self, seen: tuple[str, Seen]) -> None:
        url, state = seen
        config = SimulatorConfig(
            receipt_delay=0, receipt_batch=10, receipt_batch_window_ms=200,
            receipt_secret=self.SECRET,
        )  # fmt: skip
        with simulator(config) as sim:
            ids = self.submit(sim, url, 4)
            wait_for(lambda: sim.stats()["receipts_sent"] == 4)
        (request,) = state.requests
        assert request.query == {}
        assert is_signed_by(self.SECRET, request)
        assert not is_signed_by(generate_secret(), request)
        assert {r.carrier_id for r in sim.carrier.parse_receipts(request)} == ids

    def test_unsigned_batches_keep_each_segment_s_url(self, seen: tuple[str, Seen]) -> None:
        """Without a secret only the URL's token vouches: receipts of one URL go together."""
        url, state = seen
        config = SimulatorConfig(receipt_delay=0, receipt_batch=10, receipt_batch_window_ms=100)
        with simulator(config) as sim:
            self.submit(sim, url, 3)
            wait_for(lambda: sim.stats()["receipts_sent"] == 3)
        assert sorted(r.query["ref"] for r in state.requests) == ["m0:1", "m1:1", "m2:1"]
        assert all("webhook-signature" not in r.headers for r in state.requests)

    def test_one_by_one_each_goes_to_its_url_signed(self, seen: tuple[str, Seen]) -> None:
        url, state = seen
        config = SimulatorConfig(receipt_delay=0, receipt_secret=self.SECRET)
        with simulator(config) as sim:
            self.submit(sim, url, 2)
            wait_for(lambda: sim.stats()["receipts_sent"] == 2)
        assert sorted(r.query["token"] for r in state.requests) == ["t0", "t1"]
        assert all(is_signed_by(self.SECRET, r) for r in state.requests)

    def test_the_cli_takes_the_secret_and_refuses_a_bad_one(self) -> None:
        config = scenario_config(None, {"receipt_secret": self.SECRET})
        assert config.receipt_secret == self.SECRET
        assert self.SECRET not in repr(config)
        app = typer.Typer()
        app.command()(carrier_sim)
        result = CliRunner().invoke(app, ["--receipt-secret", "not-a-secret"])
        assert result.exit_code == 2
        assert "whsec_" in result.output


class TestConfig:
    @pytest.mark.parametrize(
        "changes",
        [
            {"undelivered_ratio": 1.5},
            {"undelivered_ratio": 0.6, "expired_ratio": 0.6},
            {"error_rate_5xx": -0.1},
            {"latency_ms": -1},
            {"receipt_attempts": 0},
        ],
    )
    def test_refuses_nonsense(self, changes: dict[str, float]) -> None:
        """Ratios outside 0..1 and negative delays are refused at construction."""
        with pytest.raises(ValueError, match="must"):
            SimulatorConfig(**changes)  # type: ignore[arg-type]

    def test_cli_reports_bad_options(self) -> None:
        """`smsq carrier-sim` turns a bad ratio into a usage error without starting."""
        app = typer.Typer()
        app.command()(carrier_sim)
        result = CliRunner().invoke(app, ["--undelivered-ratio", "2"])
        assert result.exit_code == 2
        assert "undelivered_ratio" in result.output
