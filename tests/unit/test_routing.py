"""Tests for routes, failover, shared limits and breakers (`worker.carriers.routing`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import fakeredis
import httpx
import pytest

from worker.breaker import CircuitBreaker
from worker.carriers.base import Accepted, CarrierReceipt, InboundRequest, SegmentSubmission
from worker.carriers.config import CarrierConfig, CarriersConfig, RouteConfig
from worker.carriers.routes import RouteTable
from worker.carriers.routing import Gate, RoutedCarrier
from worker.carriers.sim import SimCarrier
from worker.errors import (
    CarrierError,
    CarrierRejectedError,
    CarrierUnavailableError,
    CarrierUnknownOutcomeError,
)
from worker.ratelimit import ConcurrencyLimiter, RateLimiter
from worker.store.keys import carrier_tries_key

Outcome = Callable[[SegmentSubmission], Accepted]


def accept(segment: SegmentSubmission) -> Accepted:
    return Accepted(f"id-{segment.client_ref}")


def raising(exc: CarrierError) -> Outcome:
    def outcome(segment: SegmentSubmission) -> Accepted:
        raise exc

    return outcome


DOWN = raising(CarrierUnavailableError("503", code="http_503", status_code=503))
UNREACHABLE = raising(CarrierUnavailableError("refused", code="unreachable"))
THROTTLED = raising(CarrierUnavailableError("429", code="http_429", status_code=429, retry_after=3))
BAD_NUMBER = raising(CarrierRejectedError("invalid To", code="21211", status_code=400))
BAD_AUTH = raising(CarrierRejectedError("auth", code="kannel_403", status_code=403))
NO_ANSWER = raising(CarrierUnknownOutcomeError("read timeout", code="no_answer"))


@dataclass
class FakeCarrier:
    """A carrier double: answers with `outcome`, records what it was given."""

    name: str
    outcome: Outcome = accept
    submits_whole_text: bool = False
    honours_client_ref: bool = False
    acknowledges_by_receipt: bool = False
    submitted: list[SegmentSubmission] = field(default_factory=list)

    def submit(self, segment: SegmentSubmission) -> Accepted:
        self.submitted.append(segment)
        return self.outcome(segment)

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        return []


def segment(message_id: str = "m1", seq: int = 1, total: int = 1, to: str = "+4915112345678"):  # type: ignore[no-untyped-def]
    return SegmentSubmission(
        message_id=message_id, seq=seq, total=total, to=to, sender="smsq", udh=b"",
        payload=b"", data_coding=0, text="hi", full_text="hi",
        receipt_url="http://api.test/carriers/routes/dlr",
    )  # fmt: skip


def config(*routes: RouteConfig, names: tuple[str, ...] = ("a", "b", "c")) -> CarriersConfig:
    carriers = {name: CarrierConfig(type="sim", url="http://x") for name in names}
    return CarriersConfig(carriers=carriers, routes=routes)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def sleeps() -> list[float]:
    return []


class Net:
    """Carriers a, b, c (each with a breaker) on one route, in that order."""

    def __init__(self, client: fakeredis.FakeRedis, sleeps: list[float]) -> None:
        self.carriers = {name: FakeCarrier(name) for name in ("a", "b", "c")}
        self.gates = {
            name: Gate(carrier, CircuitBreaker(client, f"br:{name}", failures=2, cooldown=60))
            for name, carrier in self.carriers.items()
        }
        table = RouteTable(config(RouteConfig(carriers=("a", "b", "c"))))
        self.routed = RoutedCarrier(
            self.gates, table, client, public_url="https://sms.test/", sleep=sleeps.append
        )

    def calls(self) -> dict[str, int]:
        return {name: len(c.submitted) for name, c in self.carriers.items()}


@pytest.fixture
def net(client: fakeredis.FakeRedis, sleeps: list[float]) -> Net:
    return Net(client, sleeps)


class TestRouteTable:
    TABLE = RouteTable(
        config(
            RouteConfig(prefixes=("+49",), carriers=("a",)),
            RouteConfig(prefixes=("4915",), carriers=("b",)),
            RouteConfig(countries=("at",), carriers=("c",)),
            RouteConfig(carriers=("c", "a")),
        )
    )

    @pytest.mark.parametrize(
        ("to", "expected"),
        [
            ("+4930123456", ["a"]),
            ("+4915112345678", ["b"]),  # the longer prefix wins
            ("4915112345678", ["b"]),  # with or without '+'
            ("+436641234567", ["c"]),  # Austria, by country
            ("+14155552671", ["c", "a"]),  # the default route
        ],
    )
    def test_picks_the_most_specific_route(self, to: str, expected: list[str]) -> None:
        """Longest prefix, then country, then the default route."""
        assert self.TABLE.order(to, "m1") == expected

    def test_no_match_without_default(self) -> None:
        """Without a default route an unmatched destination has no carriers."""
        table = RouteTable(config(RouteConfig(prefixes=("+49",), carriers=("a",))))
        assert table.order("+14155552671", "m1") == []

    def test_weights_pick_the_first_carrier(self) -> None:
        """The first carrier is drawn by weight; the others follow in route order."""
        table = RouteTable(config(RouteConfig(carriers=("a", "b", "c"), weights=(3, 1, 0))))
        firsts = Counter(table.order("+1", f"m{i}")[0] for i in range(4000))
        assert firsts["c"] == 0
        assert 0.70 < firsts["a"] / 4000 < 0.80
        assert table.order("+1", "m1") == table.order("+1", "m1")  # stable per message
        for i in range(50):
            order = table.order("+1", f"m{i}")
            assert sorted(order) == ["a", "b", "c"]
            assert [n for n in ("a", "b", "c") if n != order[0]] == order[1:]


class TestFailover:
    def test_first_carrier_takes_it(self, net: Net) -> None:
        """All up: the first carrier accepts, and `Accepted.carrier` names it."""
        assert net.routed.submit(segment()) == Accepted("id-m1:1", carrier="a")
        assert net.calls() == {"a": 1, "b": 0, "c": 0}

    def test_a_gateways_pending_answer_is_kept(self, net: Net) -> None:
        """A carrier that only queued the segment (Kannel) stays `awaiting_ack` behind a route."""
        net.carriers["a"].outcome = lambda s: Accepted(f"id-{s.client_ref}", awaiting_ack=True)
        assert net.routed.submit(segment()) == Accepted("id-m1:1", carrier="a", awaiting_ack=True)

    def test_receipt_url_names_the_carrier(self, net: Net) -> None:
        """Each carrier is told its own `/carriers/{name}/dlr` under the public URL, with the
        segment's reference and token kept."""
        net.carriers["a"].outcome = DOWN
        query = "ref=m1:1&token=t0k3n"
        net.routed.submit(replace(segment(), receipt_url=f"http://x.test/carriers/r/dlr?{query}"))
        assert net.carriers["a"].submitted[0].receipt_url == (
            f"https://sms.test/carriers/a/dlr?{query}"
        )
        assert net.carriers["b"].submitted[0].receipt_url == (
            f"https://sms.test/carriers/b/dlr?{query}"
        )

    @pytest.mark.parametrize("outcome", [DOWN, UNREACHABLE, BAD_AUTH, THROTTLED])
    def test_goes_to_the_next_carrier(self, net: Net, outcome: Outcome) -> None:
        """Down, unreachable, refusing for its own reasons or throttling: the next one is tried."""
        net.carriers["a"].outcome = outcome
        assert net.routed.submit(segment()).carrier == "b"
        assert net.calls() == {"a": 1, "b": 1, "c": 0}

    def test_message_side_rejection_is_final(self, net: Net) -> None:
        """A bad number is bad everywhere: raised, no other carrier asked."""
        net.carriers["a"].outcome = BAD_NUMBER
        with pytest.raises(CarrierRejectedError, match="invalid To"):
            net.routed.submit(segment())
        assert net.calls() == {"a": 1, "b": 0, "c": 0}

    def test_unknown_outcome_is_not_resent(self, net: Net) -> None:
        """It may have been sent: raised, never tried elsewhere."""
        net.carriers["a"].outcome = NO_ANSWER
        with pytest.raises(CarrierUnknownOutcomeError):
            net.routed.submit(segment())
        assert net.calls() == {"a": 1, "b": 0, "c": 0}

    def test_unknown_outcome_pins_the_carrier(self, net: Net) -> None:
        """A resend after an unknown outcome goes to that carrier alone (it dedupes by ref)."""
        net.carriers["a"].outcome = NO_ANSWER
        with pytest.raises(CarrierUnknownOutcomeError):
            net.routed.submit(segment())
        net.carriers["a"].outcome = THROTTLED
        with pytest.raises(CarrierUnavailableError):
            net.routed.submit(segment())
        net.carriers["a"].outcome = accept
        assert net.routed.submit(segment()).carrier == "a"
        assert net.calls() == {"a": 3, "b": 0, "c": 0}

    def test_honours_client_refs_only_if_every_carrier_does(
        self, net: Net, client: fakeredis.FakeRedis
    ) -> None:
        """The route offers idempotent resends only when all its carriers dedupe by ref."""
        assert not net.routed.honours_client_ref
        sim = SimCarrier(httpx.Client(), "http://sim.test")
        table = RouteTable(config(RouteConfig(carriers=("a",)), names=("a",)))
        routed = RoutedCarrier({"a": Gate(sim)}, table, client, public_url="http://x")
        assert routed.honours_client_ref

    def test_all_down_is_unavailable(self, net: Net) -> None:
        """When every carrier is down, the error is transient (the Sender retries later)."""
        for carrier in net.carriers.values():
            carrier.outcome = DOWN
        with pytest.raises(CarrierUnavailableError):
            net.routed.submit(segment())
        assert net.calls() == {"a": 1, "b": 1, "c": 1}

    def test_a_retry_skips_carriers_already_down(self, net: Net) -> None:
        """A durable retry of the segment starts at the carriers not tried yet."""
        net.carriers["a"].outcome = DOWN
        net.carriers["b"].outcome = THROTTLED
        net.carriers["c"].outcome = THROTTLED
        with pytest.raises(CarrierUnavailableError) as caught:
            net.routed.submit(segment())
        assert caught.value.retry_after == 3
        net.carriers["a"].outcome = net.carriers["b"].outcome = accept
        assert net.routed.submit(segment()).carrier == "b"
        assert net.calls() == {"a": 1, "b": 2, "c": 1}

    def test_never_twice_while_others_remain(self, net: Net) -> None:
        """Once every carrier was down, a new round starts; a refusing carrier stays out."""
        net.carriers["a"].outcome = BAD_AUTH
        net.carriers["b"].outcome = net.carriers["c"].outcome = DOWN
        for _ in range(3):
            with pytest.raises(CarrierUnavailableError):
                net.routed.submit(segment())
        assert net.calls() == {"a": 1, "b": 2, "c": 2}

    def test_refused_everywhere_is_final(self, net: Net) -> None:
        """When every carrier refused it for its own reasons, the segment fails."""
        for carrier in net.carriers.values():
            carrier.outcome = BAD_AUTH
        with pytest.raises(CarrierRejectedError):
            net.routed.submit(segment())
        with pytest.raises(CarrierRejectedError, match="every carrier"):
            net.routed.submit(segment())
        assert net.calls() == {"a": 1, "b": 1, "c": 1}

    def test_history_is_per_segment(self, net: Net, client: fakeredis.FakeRedis) -> None:
        """What one segment went through does not steer another; the record expires."""
        net.carriers["a"].outcome = DOWN
        net.routed.submit(segment(seq=1, total=2))
        net.carriers["a"].outcome = accept
        assert net.routed.submit(segment(seq=2, total=2)).carrier == "a"
        assert client.hgetall(carrier_tries_key("m1:1")) == {"a": "unavailable"}
        assert 0 < client.ttl(carrier_tries_key("m1:1")) <= 2 * 24 * 3600

    def test_no_route_is_rejected(self, client: fakeredis.FakeRedis) -> None:
        """A destination without a route is refused for good."""
        carrier = FakeCarrier("a")
        table = RouteTable(config(RouteConfig(prefixes=("+49",), carriers=("a",))))
        routed = RoutedCarrier({"a": Gate(carrier)}, table, client, public_url="http://x")
        with pytest.raises(CarrierRejectedError, match="no carrier route"):
            routed.submit(segment(to="+14155552671"))

    def test_multipart_skips_whole_text_carriers(self, client: fakeredis.FakeRedis) -> None:
        """A part of a message never goes to a carrier that wants the whole text."""
        gates = {"a": Gate(FakeCarrier("a", submits_whole_text=True)), "b": Gate(FakeCarrier("b"))}
        table = RouteTable(config(RouteConfig(carriers=("a", "b"))))
        routed = RoutedCarrier(gates, table, client, public_url="http://x")
        assert not routed.submits_whole_text
        assert routed.submit(segment(total=2)).carrier == "b"
        assert routed.submit(segment(message_id="m2")).carrier == "a"


class TestBreaker:
    def test_opens_and_skips_the_carrier(self, net: Net) -> None:
        """After 2 failures a's circuit is open: later segments go straight to b."""
        net.carriers["a"].outcome = DOWN
        for i in range(5):
            assert net.routed.submit(segment(message_id=f"m{i}")).carrier == "b"
        assert net.calls() == {"a": 2, "b": 5, "c": 0}

    def test_4xx_does_not_open_it(self, net: Net) -> None:
        """Refusals mean the carrier is up: the breaker stays closed."""
        net.carriers["a"].outcome = BAD_NUMBER
        for i in range(4):
            with pytest.raises(CarrierRejectedError):
                net.routed.submit(segment(message_id=f"m{i}"))
        assert net.calls()["a"] == 4

    def test_unknown_outcomes_open_it(self, net: Net) -> None:
        """Timeouts count as failures."""
        net.carriers["a"].outcome = NO_ANSWER
        for i in range(2):
            with pytest.raises(CarrierUnknownOutcomeError):
                net.routed.submit(segment(message_id=f"m{i}"))
        assert net.routed.submit(segment(message_id="m9")).carrier == "b"

    def test_all_open_waits_for_the_cooldown(self, net: Net) -> None:
        """With every circuit open the Sender is told to come back when one may half-open."""
        for carrier in net.carriers.values():
            carrier.outcome = DOWN
        for i in range(2):
            with pytest.raises(CarrierUnavailableError):
                net.routed.submit(segment(message_id=f"m{i}"))
        with pytest.raises(CarrierUnavailableError) as caught:
            net.routed.submit(segment(message_id="m9"))
        assert caught.value.code == "circuit_open"
        assert caught.value.retry_after is not None
        assert 59 < caught.value.retry_after <= 60
        assert net.calls() == {"a": 2, "b": 2, "c": 2}


class TestLimits:
    def single(self, client: fakeredis.FakeRedis, sleeps: list[float], **gate: object):  # type: ignore[no-untyped-def]
        carrier = FakeCarrier("a")
        table = RouteTable(config(RouteConfig(carriers=("a",)), names=("a",)))
        routed = RoutedCarrier(
            {"a": Gate(carrier, **gate)}, table, client, public_url="http://x", max_wait=0.5,  # type: ignore[arg-type]
            name="a", sleep=sleeps.append,
        )  # fmt: skip
        return carrier, routed

    def test_short_waits_happen_in_place(
        self, client: fakeredis.FakeRedis, sleeps: list[float]
    ) -> None:
        """Within `max_wait`, the slot is reserved and slept for: every segment goes."""
        carrier, routed = self.single(client, sleeps, rate=RateLimiter(client, "r", 10))
        for i in range(5):
            routed.submit(segment(message_id=f"m{i}"))
        assert len(carrier.submitted) == 5
        assert len(sleeps) == 4
        assert all(0.05 < s <= 0.4 for s in sleeps)

    def test_long_waits_go_back_to_the_sender(
        self, client: fakeredis.FakeRedis, sleeps: list[float]
    ) -> None:
        """Beyond `max_wait`: unavailable with the wait as `retry_after`, nothing sent."""
        carrier, routed = self.single(client, sleeps, rate=RateLimiter(client, "r", 2))
        routed.submit(segment(message_id="m0"))
        routed.submit(segment(message_id="m1"))  # waits 0.5 s in place
        with pytest.raises(CarrierUnavailableError) as caught:
            routed.submit(segment(message_id="m2"))
        assert caught.value.code == "rate_limited"
        assert caught.value.retry_after is not None
        assert 0.5 < caught.value.retry_after <= 1.0
        assert len(carrier.submitted) == 2

    def test_concurrency_cap(self, client: fakeredis.FakeRedis, sleeps: list[float]) -> None:
        """With every slot held elsewhere the segment is deferred; the slot is released after."""
        slots = ConcurrencyLimiter(client, "s", 1)
        carrier, routed = self.single(client, sleeps, slots=slots)
        routed.submit(segment(message_id="m0"))
        assert slots.in_use() == 0
        held = slots.acquire()
        with pytest.raises(CarrierUnavailableError) as caught:
            routed.submit(segment(message_id="m1"))
        assert caught.value.code == "concurrency_limited"
        assert held is not None
        assert len(carrier.submitted) == 1

    def test_single_carrier_parses_its_receipts(
        self, client: fakeredis.FakeRedis, sleeps: list[float]
    ) -> None:
        """Guarding one carrier under its name, receipts are that carrier's to parse."""
        sim = SimCarrier(httpx.Client(), "http://sim.test")
        table = RouteTable(config(RouteConfig(carriers=("sim",)), names=("sim",)))
        routed = RoutedCarrier({"sim": Gate(sim)}, table, client, public_url="http://x", name="sim")
        body = b'{"carrier_id": "c1", "status": "DELIVRD", "err": "000"}'
        (receipt,) = routed.parse_receipts(InboundRequest("POST", "http://x", {}, {}, body))
        assert receipt.carrier_id == "c1"
        with pytest.raises(NotImplementedError):
            RoutedCarrier({"sim": Gate(sim)}, table, client, public_url="http://x").parse_receipts(
                InboundRequest("POST", "http://x", {}, {}, body)
            )

    def test_single_carrier_errors_pass_through(
        self, client: fakeredis.FakeRedis, sleeps: list[float]
    ) -> None:
        """Guarding one carrier keeps its own errors (code, retry_after) for the Sender."""
        carrier, routed = self.single(client, sleeps)
        carrier.outcome = raising(
            CarrierUnavailableError("503", code="http_503", status_code=503, retry_after=4)
        )
        with pytest.raises(CarrierUnavailableError) as caught:
            routed.submit(segment())
        assert (caught.value.code, caught.value.retry_after) == ("http_503", 4)
        assert client.keys("smsq:carrier-tries:*") == []  # nothing to fail over to
