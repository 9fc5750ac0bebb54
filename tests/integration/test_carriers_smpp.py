"""The `smpp` carrier end to end: a real `smsq smpp` connector process bound to the SMPP SMSC
stand-in, a real worker and API, real Redis; clients' receipts at a real receiver.

The SMSC's answer to submit_sm is the level-1 receipt (a refusal a final `rejected` with the
SMPP status), its deliver_sm (or data_sm) receipt the level-2 one, over the same binds.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.jasmin import PASSWORD, USERNAME, running_jasmin
from tests.integration.jasmin import missing as jasmin_missing
from tests.integration.smpp_stack import SmppStack, smpp_stack
from tests.integration.stack import wait_for
from tests.smpp.smsc import Outcome, RunningSmsc, by_last_digit, running_smsc
from worker.celery_app import create_app as create_celery_app
from worker.encoding import decode_segment, reassemble, summarize
from worker.queueing import CeleryPublisher, publishes_directly
from worker.reconciler import Reconciler, ReconcilerConfig
from worker.smpp.pdu import Status, Tag
from worker.store import Store, message_key

pytestmark = pytest.mark.integration

SHORT = "Your code is 123456"
GSM_LONG = "SMPP GSM test {with} [extension] chars €uro ~ | ^ \\ " * 7  # escapes
UCS2_LONG = "Привет, мир! Emoji 😀 stay whole. " * 6  # surrogate pairs

# What the SMSC does, by the destination's last digit.
SCRIPT = by_last_digit(
    {
        "1": Outcome(submit_status=Status.RINVDSTADR),
        "2": Outcome(stat="UNDELIV", err="034"),
        "3": Outcome(stat="EXPIRED", data_sm=True),
        "4": Outcome(stat="REJECTD", err="011", tlvs=False),
        "5": Outcome(receipt_first=True, resp_delay=0.3),
        "6": Outcome(resp_delay=1.5),
    }
)
ACCEPTED = ("accepted", "ESME_ROK")
JASMIN_MISSING = jasmin_missing()
paths = (f"/r/{n}" for n in itertools.count())


@pytest.fixture(scope="class")
def smsc() -> Iterator[RunningSmsc]:
    with running_smsc(SCRIPT) as running:
        yield running


@pytest.fixture(scope="class")
def system(
    redis_server_url: str, smsc: RunningSmsc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmppStack]:
    directory = Path(tmp_path_factory.mktemp("smpp"))
    with smpp_stack(redis_server_url, smsc, directory, "upstream") as running:
        yield running


def texts_at(smsc: RunningSmsc, to: str) -> list[tuple[str, int]]:
    """The texts submitted to `to`, reassembled from their parts' UDH and unpacked septets."""
    parts = [s.pdu for s in smsc.submitted if s.pdu.destination_addr == to.lstrip("+")]
    decoded = [
        decode_segment(p.udh, _packed(p.text_bytes, p.udh, p.data_coding), p.data_coding)
        for p in parts
    ]
    by_reference = defaultdict(list)
    for segment in decoded:
        by_reference[segment.reference].append(segment)
    return [(reassemble(group), len(group)) for group in by_reference.values()]


def _packed(data: bytes, udh: bytes, coding: int) -> bytes:
    """SMPP carries GSM text as one septet per octet; the decoder reads packed TP-UD."""
    if coding != 0:
        return data
    from worker.encoding.gsm7 import header_septets, pack

    return pack(data, 7 * header_septets(len(udh)) - 8 * len(udh))


class TestSmppCarrier:
    @pytest.mark.parametrize(
        ("to", "final", "receipts"),
        [
            ("+4915110000010", "delivered", [ACCEPTED, ("delivered", "DELIVRD")]),
            ("+4915110000011", "rejected", [("rejected", "REJECTD")]),
            ("+4915110000012", "undelivered", [ACCEPTED, ("undelivered", "UNDELIV")]),
            ("+4915110000013", "expired", [ACCEPTED, ("expired", "EXPIRED")]),
            ("+4915110000014", "rejected", [ACCEPTED, ("rejected", "REJECTD")]),
            ("+4915110000015", "delivered", [ACCEPTED, ("delivered", "DELIVRD")]),
            ("+4915110000016", "delivered", [ACCEPTED, ("delivered", "DELIVRD")]),
        ],
        ids=["delivered", "submit-refused", "undeliv", "expired-data-sm", "rejectd-text-only",
             "receipt-before-resp", "slow-resp"],
    )  # fmt: skip
    def test_the_smscs_answers_become_the_receipts(
        self, system: SmppStack, to: str, final: str, receipts: list[tuple[str, str]]
    ) -> None:
        """Level 1 is the submit_sm_resp (a refusal a final `rejected` carrying the SMPP
        status), level 2 the receipt that came back over the bind; the message ends so."""
        path = next(paths)
        message_id = system.send(to, SHORT, path)
        system.stack.wait_all([message_id], {final}, timeout=20)
        got = system.receipts(path, len(receipts))
        assert [(r["status"], r["message_status"]) for r in got] == receipts
        assert [r["level"] for r in got] == list(range(1, len(receipts) + 1))
        if to.endswith("1"):
            assert got[0]["error"]["code"] == "0x0000000B"
        elif final != "delivered":
            assert got[-1]["error"]["code"] in {"034", "smpp_EXPIRED", "011"}

    def test_the_segment_is_named_by_the_smscs_id(self, system: SmppStack) -> None:
        """The SMSC's message id becomes the segment's carrier id; one submit_sm per segment,
        addressed international 1/1 without '+', an alphanumeric sender 5/0."""
        message_id = system.send("+4915110000020", SHORT, next(paths))
        (message,) = system.stack.wait_all([message_id], {"delivered"})
        (submitted,) = [s for s in system.smsc.submitted if s.pdu.destination_addr.endswith("20")]
        assert message["segments"][0]["carrier_id"] == submitted.message_id
        assert message["segments"][0]["carrier"] == "upstream"
        pdu = submitted.pdu
        assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (
            1, 1, "4915110000020",
        )  # fmt: skip
        assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (5, 0, "smsq")
        assert (pdu.registered_delivery, pdu.data_coding, pdu.esm_class) == (1, 0, 0)

    @pytest.mark.parametrize(
        ("text", "to", "parts"),
        [(GSM_LONG, "+4915110000030", summarize(GSM_LONG).segments),
         (UCS2_LONG, "+4915110000040", summarize(UCS2_LONG).segments)],
        ids=["gsm-multipart", "ucs2-multipart"],
    )  # fmt: skip
    def test_multipart_text_arrives_whole(
        self, system: SmppStack, text: str, to: str, parts: int
    ) -> None:
        """Each part goes with its UDH (esm_class 0x40); reassembled at the SMSC the text is
        the original; the message is delivered once every part is."""
        path = next(paths)
        message_id = system.send(to, text, path)
        (message,) = system.stack.wait_all([message_id], {"delivered"})
        assert [s["status"] for s in message["segments"]] == ["delivered"] * parts
        assert texts_at(system.smsc, to) == [(text, parts)]
        assert [(r["level"], r["status"]) for r in system.receipts(path, 2)] == [
            (1, "accepted"), (2, "delivered"),
        ]  # fmt: skip

    def test_throttling_backs_off_without_failing(self, system: SmppStack) -> None:
        """ESME_RTHROTTLED answers pause the bind and the segments go again: all delivered,
        each submitted once (the throttled attempts were refused, not taken)."""
        system.smsc.call(lambda: setattr(system.smsc.smsc, "throttle_next", 6))
        tos = [f"+49151100001{n}0" for n in range(10)]
        ids = [system.send(to, f"throttled {to}", next(paths), level=2) for to in tos]
        system.stack.wait_all(ids, {"delivered"}, timeout=20)
        assert system.smsc.counters.throttled == 6
        counted = Counter(s.pdu.destination_addr for s in system.smsc.submitted)
        assert all(counted[to.lstrip("+")] == 1 for to in tos)

    @pytest.mark.parametrize(("keyword", "answer"), [("STOP", 422), ("START", 202)])
    def test_a_message_from_a_handset_is_taken_and_answered(
        self, system: SmppStack, keyword: str, answer: int
    ) -> None:
        """A deliver_sm that is no receipt goes to the MO intake (`worker.mo.accept`), then
        the SMSC gets its deliver_sm_resp: a STOP is stored by then, so a send to that handset
        is refused (`opted_out`); a START lifts it."""
        handset = "+4915199000001"  # no other test's: to a number nobody owns, a STOP is global
        acked = system.smsc.counters.receipts_acked
        assert system.smsc.call(lambda: system.smsc.smsc.deliver_mo(handset, "4930", keyword))
        wait_for(lambda: system.smsc.counters.receipts_acked > acked, 10, "the deliver_sm_resp")
        stack = system.stack
        sent = stack.http.post(f"{stack.api_url}/sms/send", json={"to": handset, "content": "hi"})
        assert sent.status_code == answer, sent.text
        if answer == 422:
            assert sent.json()["error"]["code"] == "opted_out"

    def test_an_unbind_is_followed_by_a_new_bind(self, system: SmppStack) -> None:
        """The SMSC unbinds every session; the connector binds again and sends on."""
        binds = system.smsc.counters.binds
        system.smsc.call(system.smsc.smsc.unbind_all)
        wait_for(lambda: system.smsc.counters.binds >= binds + 2, 15, "binding again")
        message_id = system.send("+4915110000050", SHORT, next(paths))
        system.stack.wait_all([message_id], {"delivered"})


@pytest.fixture(scope="class")
def hex_smsc() -> Iterator[RunningSmsc]:
    with running_smsc(id_base="hex", receipt_id_base="decimal") as running:
        yield running


@pytest.fixture(scope="class")
def options_system(
    redis_server_url: str, hex_smsc: RunningSmsc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmppStack]:
    directory = Path(tmp_path_factory.mktemp("smpp-options"))
    keys: dict[str, Any] = {
        "bind": "transmitter + receiver", "binds": 1, "long_text": "sar",
        "id_bases": ["hex", "decimal"],
    }  # fmt: skip
    with smpp_stack(redis_server_url, hex_smsc, directory, "sarhex", **keys) as running:
        yield running


class TestSmppOptions:
    def test_hex_answers_match_decimal_receipts_over_a_receiver(
        self, options_system: SmppStack
    ) -> None:
        """Ids answered in hex and reported in decimal (`id_bases`) still correlate, with the
        receipts arriving on the receiver bind of a transmitter + receiver pair; a long text
        goes as sar_* TLVs, no UDH."""
        system, path = options_system, next(paths)
        message_id = system.send("+4915110000060", GSM_LONG, path)
        (message,) = system.stack.wait_all([message_id], {"delivered"})
        parts = [s.pdu for s in system.smsc.submitted if s.pdu.destination_addr.endswith("60")]
        total = summarize(GSM_LONG).segments
        assert [p.tlvs[Tag.SAR_SEGMENT_SEQNUM][0] for p in parts] == list(range(1, total + 1))
        assert {p.tlvs[Tag.SAR_TOTAL_SEGMENTS] for p in parts} == {bytes([total])}
        assert {p.esm_class for p in parts} == {0}
        assert [r["status"] for r in system.receipts(path, 2)] == ["accepted", "delivered"]
        assert message["segments"][0]["carrier_id"] == "1"  # 00000001 in hex, 1 in decimal


CHAOS_MESSAGES = 200


@pytest.fixture(scope="class")
def chaos_smsc() -> Iterator[RunningSmsc]:
    with running_smsc(lambda to: Outcome(receipt_delay=0.3)) as running:
        yield running


@pytest.fixture(scope="class")
def chaos_system(
    redis_server_url: str, chaos_smsc: RunningSmsc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmppStack]:
    directory = Path(tmp_path_factory.mktemp("smpp-chaos"))
    with smpp_stack(redis_server_url, chaos_smsc, directory, "chaos", rate=60) as running:
        yield running


class TestConnectorDeath:
    def test_a_killed_connector_loses_nothing_and_sends_nothing_twice(
        self, chaos_system: SmppStack
    ) -> None:
        """kill -9 of the connector mid-run, then a new one: every message ends (delivered, or
        failed as an unknown outcome when its submit_sm was written and no answer was
        stored), none reaches the SMSC twice, and each receipt reaches the client once."""
        system, smsc = chaos_system, chaos_system.smsc
        ids = [
            system.send(f"+49151300{n:05d}", f"chaos {n:05d}", "/chaos")
            for n in range(CHAOS_MESSAGES)
        ]
        wait_for(lambda: smsc.counters.submits >= 60, 20, "the first submits")
        system.kill_connector()
        assert smsc.counters.submits < CHAOS_MESSAGES, "the kill came too late to matter"
        system.start_connector()
        final = wait_for(lambda: _all_final(system, ids), 40, "every message final")

        texts = Counter(s.pdu.short_message for s in smsc.submitted)
        assert max(texts.values()) == 1, "a submit_sm went out twice"
        delivered = [m for m, status in final.items() if status == "delivered"]
        unknown = [m for m, status in final.items() if status != "delivered"]
        assert set(final.values()) <= {"delivered", "failed"}
        assert len(unknown) <= 2 * 10, "more unknown outcomes than submit_sm in flight"
        assert len(texts) >= len(delivered)
        for message_id in unknown:
            (segment,) = system.stack.message(message_id)["segments"]
            assert (segment["status"], segment["error"]["code"]) == ("unknown", "unknown_outcome")

        expected = {(m, level) for m in delivered for level in (1, 2)} | {(m, 1) for m in unknown}
        # A receipt opened in the instant before the kill, not yet handed to its endpoint's
        # queue, is the reconciler's to republish (docs/reliability.md): one pass, as the
        # scheduler's would be after its grace.
        time.sleep(1.0)
        reconcile_once(system)
        assert_receipts_once(system, "/chaos", expected)

    def test_a_stopped_connector_leaves_nothing_unknown(self, chaos_system: SmppStack) -> None:
        """SIGTERM mid-run: the connector waits for the answers to what it wrote, stores them
        and leaves; the next one takes the rest over at once: all delivered, each once."""
        system, smsc = chaos_system, chaos_system.smsc
        start = smsc.counters.submits
        ids = [system.send(f"+49151310{n:05d}", f"calm {n:05d}", "/calm") for n in range(100)]
        wait_for(lambda: smsc.counters.submits - start >= 30, 20, "the first submits")
        system.stop_connectors()
        assert smsc.counters.submits - start < 100, "the stop came too late to matter"
        system.start_connector()
        final = wait_for(lambda: _all_final(system, ids), 30, "every message final")
        assert set(final.values()) == {"delivered"}
        texts = Counter(s.pdu.short_message for s in smsc.submitted[start:])
        assert (len(texts), max(texts.values())) == (100, 1)
        assert_receipts_once(system, "/calm", {(m, level) for m in ids for level in (1, 2)})


def assert_receipts_once(system: SmppStack, path: str, expected: set[tuple[str, int]]) -> None:
    """Exactly the `expected` (message id, level) receipts reach `path`, each once."""

    def seen() -> Counter[tuple[str, int]]:
        found = [r.json() for r in system.receiver.snapshot() if r.path == path]
        return Counter((r["id"], r["level"]) for r in found)

    def all_there() -> Counter[tuple[str, int]] | None:
        found = seen()
        return found if len(found) >= len(expected) else None

    try:
        got = wait_for(all_there, 20, f"receipts at {path}")
    except AssertionError:
        missing = sorted(expected - set(seen()))[:3]
        details = [(m, level, system.stack.message(m)) for m, level in missing]
        raise AssertionError(details) from None
    assert max(got.values()) == 1, "a receipt reached the client twice"
    assert set(got) == expected


def reconcile_once(system: SmppStack) -> None:
    settings = system.stack.settings
    publisher = CeleryPublisher(
        create_celery_app(settings), system.stack.redis, direct=publishes_directly(settings)
    )
    config = ReconcilerConfig(grace=0.5)
    Reconciler(Store(system.stack.redis), publisher, config).run_once()


def _all_final(system: SmppStack, ids: list[str]) -> dict[str, str] | None:
    pipe = system.stack.redis.pipeline(transaction=False)
    for message_id in ids:
        pipe.hget(message_key(message_id), "status")
    statuses = dict(zip(ids, pipe.execute(), strict=True))
    return statuses if set(statuses.values()) <= {"delivered", "failed", "rejected"} else None


@pytest.fixture(scope="class")
def jasmin_smsc() -> Iterator[RunningSmsc]:
    # Jasmin looks a receipt up by the SMSC's id once it stored that id (the submit_sm_resp):
    # a receipt that overtakes it waits for Jasmin's 10 s retry, so the stand-in waits a bit.
    with running_smsc(lambda to: Outcome(receipt_delay=0.5)) as running:
        yield running


@pytest.fixture(scope="class")
def jasmin_system(
    redis_server_url: str, jasmin_smsc: RunningSmsc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmppStack]:
    directory = Path(tmp_path_factory.mktemp("smpp-jasmin"))
    with ExitStack() as stack:
        jasmin = stack.enter_context(running_jasmin(directory, jasmin_smsc.port))
        login = {"system_id": USERNAME, "password": PASSWORD}
        system = smpp_stack(
            redis_server_url, jasmin_smsc, directory, "jasmin", via=jasmin.smpp_port, **login
        )
        yield stack.enter_context(system)


@pytest.mark.skipif(JASMIN_MISSING is not None, reason=JASMIN_MISSING or "")
class TestThroughJasmin:
    @pytest.mark.parametrize(
        ("to", "text"), [("+4915110000070", SHORT), ("+4915110000080", UCS2_LONG)],
        ids=["single", "ucs2-multipart"],
    )  # fmt: skip
    def test_a_message_goes_out_and_its_receipt_comes_back(
        self, jasmin_system: SmppStack, to: str, text: str
    ) -> None:
        """Bound to Jasmin's SMPP server as an ESME: Jasmin routes the submit_sm to its SMSC,
        answers with its own id, and relays the SMSC's receipt over our bind; the text reaches
        the SMSC whole."""
        system, path = jasmin_system, next(paths)
        message_id = system.send(to, text, path)
        (message,) = system.stack.wait_all([message_id], {"delivered"}, timeout=30)
        got = system.receipts(path, 2)
        assert [(r["level"], r["status"], r["message_status"]) for r in got] == [
            (1, "accepted", "ESME_ROK"), (2, "delivered", "DELIVRD"),
        ]  # fmt: skip
        assert len(message["segments"][0]["carrier_id"]) == 36  # Jasmin's own (a UUID)
        assert texts_at(system.smsc, to) == [(text, summarize(text).segments)]
