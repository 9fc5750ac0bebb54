"""The `kannel` adapter against a real Kannel (bearerbox + smsbox + an SMSC).

With Kannel's fake SMSC: multipart GSM and UCS-2 messages must arrive intact (reassembled here
from the UDH of each part), and the receipts Kannel fetches from our `dlr-url` must come back
in and correlate, so that the messages end `delivered`.

With our SMPP SMSC stand-in behind Kannel (`smsc = smpp`): the SMSC's answer to `submit_sm`
is the level-1 receipt (an acceptance, or a refusal as a final `rejected`), and its receipts'
`stat:` (`EXPIRED`, `UNDELIV`, `REJECTD`, `DELIVRD`) the level-2 one, through Kannel's DLR
types (8, 16, 1, 2, 34).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.carrier_stack import CarrierStack, carrier_stack
from tests.integration.kannel import (
    KANNEL_MISSING,
    PASSWORD,
    USERNAME,
    Handed,
    Kannel,
    running_kannel,
)
from tests.integration.stack import wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from tests.smpp.pdu import Status
from tests.smpp.smsc import Outcome, RunningSmsc, by_last_digit, running_smsc
from worker.carriers.base import SegmentSubmission
from worker.carriers.kannel import KannelCarrier
from worker.carriers.routing import is_carrier_side
from worker.errors import CarrierRejectedError, CarrierUnavailableError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KANNEL_MISSING is not None, reason=KANNEL_MISSING or ""),
]

GSM_LONG = "Kannel GSM test {with} [extension] chars €uro ~ | ^ \\ " * 5  # escapes, 3 parts
UCS2_LONG = "Привет, мир! Emoji 😀 stay whole. " * 6  # surrogate pairs, 4 parts
SHORT = "Your code is 123456"


# Class-scoped: each class's Kannel and smsq stack stop before the next class starts theirs
# (the workers of two stacks on one Redis would take each other's tasks).
@pytest.fixture(scope="class")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    with running_kannel(Path(tmp_path_factory.mktemp("kannel"))) as running:
        yield running


@pytest.fixture(scope="class")
def stack(redis_server_url: str, kannel: Kannel) -> Iterator[CarrierStack]:
    env = {
        "SMSQ_CARRIER": "kannel",
        "SMSQ_CARRIER_URL": kannel.url,
        "SMSQ_CARRIER_USERNAME": USERNAME,
        "SMSQ_CARRIER_PASSWORD": PASSWORD,
    }
    with carrier_stack(redis_server_url, env) as running:
        yield running


def reassembled(parts: list[Handed], to: str) -> list[tuple[str, int]]:
    """Texts of the messages to `to` as the SMSC got them, with their part counts."""
    singles: list[tuple[bytes, int]] = []
    multipart: defaultdict[tuple[int, int], dict[int, bytes]] = defaultdict(dict)
    for part in (p for p in parts if p.to == to):
        if not part.udh:
            singles.append((part.data, 1))
            continue
        assert part.udh[:3] == bytes([5, 0, 3]), part.udh  # 8-bit concatenation IE
        reference, total, seq = part.udh[3:6]
        multipart[(reference, total)][seq] = part.data
    texts = [(data.decode("utf-8"), 1) for data, _ in singles]
    for (_, total), pieces in multipart.items():
        assert sorted(pieces) == list(range(1, total + 1)), "a part is missing"
        data = b"".join(pieces[seq] for seq in range(1, total + 1))
        try:
            texts.append((data.decode("utf-8"), total))
        except UnicodeDecodeError:
            texts.append((data.decode("utf-16-be"), total))
    return texts


class TestKannel:
    @pytest.mark.parametrize(
        ("text", "to", "parts"),
        [(GSM_LONG, "+4915110000001", 3), (UCS2_LONG, "+4915110000002", 4),
         (SHORT, "+4915110000003", 1)],
        ids=["gsm-multipart", "ucs2-multipart", "single"],
    )  # fmt: skip
    def test_arrives_intact_and_is_delivered(
        self, stack: CarrierStack, kannel: Kannel, text: str, to: str, parts: int
    ) -> None:
        """Each part reaches the SMSC with its UDH; reassembled, the text is the original; the
        receipts Kannel sends back mark the message delivered."""
        message_id = stack.send({"to": to, "from": "smsq", "content": text})
        (message,) = stack.wait_all([message_id], {"delivered"}, timeout=30)
        assert message["segments_total"] == parts
        assert {s["carrier"] for s in message["segments"]} == {"kannel"}
        assert [s["carrier_id"] for s in message["segments"]] == [
            f"{message_id}.{seq}" for seq in range(1, parts + 1)
        ]
        got = wait_for(lambda: reassembled(kannel.handed(), to) or None, 10, "nothing handed")
        assert got == [(text, parts)]

    def test_kannel_refuses_bad_credentials(self, kannel: Kannel) -> None:
        """Kannel's 403 for bad credentials is a permanent refusal, blaming the account."""
        with httpx.Client(timeout=5) as client:
            carrier = KannelCarrier(client, kannel.url, username=USERNAME, password="wrong")
            with pytest.raises(CarrierRejectedError) as caught:
                carrier.submit(segment())
        assert (caught.value.status_code, caught.value.code) == (403, "kannel_403")
        assert "Authorization failed" in caught.value.message
        assert is_carrier_side(caught.value)

    def test_stopped_kannel_is_unavailable(self, kannel: Kannel) -> None:
        """A Kannel that does not answer is transient: retried later or failed over."""
        with httpx.Client(timeout=5) as client:
            carrier = KannelCarrier(client, "http://127.0.0.1:9", username="u", password="p")
            with pytest.raises(CarrierUnavailableError) as caught:
                carrier.submit(segment())
        assert caught.value.code == "unreachable"


# What the SMSC does, by the destination's last digit.
SMSC_SCRIPT = by_last_digit(
    {
        "1": Outcome(submit_status=Status.RSUBMITFAIL),
        "2": Outcome(stat="UNDELIV", err="034"),
        "3": Outcome(stat="EXPIRED"),
        "4": Outcome(stat="REJECTD", err="011"),
    }
)


@pytest.fixture(scope="class")
def smsc() -> Iterator[RunningSmsc]:
    with running_smsc(SMSC_SCRIPT) as running:
        yield running


@pytest.fixture(scope="class")
def smpp_stack(
    redis_server_url: str, smsc: RunningSmsc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CarrierStack, str, Receiver]]:
    """smsq → Kannel → the SMPP stand-in, and a receiver for the client's receipts."""
    directory = Path(tmp_path_factory.mktemp("kannel-smpp"))
    receiver = Receiver()
    with ExitStack() as stack:
        kannel = stack.enter_context(running_kannel(directory, smpp_port=smsc.port))
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        env = {
            "SMSQ_CARRIER": "kannel",
            "SMSQ_CARRIER_URL": kannel.url,
            "SMSQ_CARRIER_USERNAME": USERNAME,
            "SMSQ_CARRIER_PASSWORD": PASSWORD,
        }
        running = stack.enter_context(carrier_stack(redis_server_url, env))
        yield running, receiver_url, receiver


ACCEPTED = ("accepted", "ESME_ROK")


class TestKannelOverSmpp:
    @pytest.mark.parametrize(
        ("to", "final", "receipts"),
        [
            ("+4915110000010", "delivered", [ACCEPTED, ("delivered", "DELIVRD")]),
            ("+4915110000011", "rejected", [("rejected", "REJECTD")]),
            ("+4915110000012", "undelivered", [ACCEPTED, ("undelivered", "UNDELIV")]),
            ("+4915110000013", "expired", [ACCEPTED, ("expired", "EXPIRED")]),
            ("+4915110000014", "rejected", [ACCEPTED, ("rejected", "REJECTD")]),
        ],
        ids=["delivered", "submit-refused", "undeliv", "expired", "rejectd"],
    )  # fmt: skip
    def test_the_smscs_answers_become_the_receipts(
        self,
        smpp_stack: tuple[CarrierStack, str, Receiver],
        to: str,
        final: str,
        receipts: list[tuple[str, str]],
    ) -> None:
        """Level 1 is the SMSC's answer to submit_sm (a refusal is a final level-1 `rejected`),
        level 2 its receipt's `stat:`; the message ends in the same state."""
        stack, receiver_url, receiver = smpp_stack
        path = f"/r/{to[1:]}"
        message_id = stack.send(
            {
                "to": to,
                "content": SHORT,
                "dlr": True,
                "dlr-level": 3,
                "dlr-url": receiver_url + path,
            }
        )
        (message,) = stack.wait_all([message_id], {final}, timeout=30)

        def arrived() -> list[dict[str, Any]] | None:
            found = [r.json() for r in receiver.snapshot() if r.path == path]
            return found if len(found) >= len(receipts) else None

        got = sorted(wait_for(arrived, 20, "receipts missing"), key=lambda r: r["level"])
        assert [(r["status"], r["message_status"]) for r in got] == receipts
        assert [r["level"] for r in got] == list(range(1, len(receipts) + 1))
        assert message["status"] == final
        if final == "rejected":
            code = "0x00000045" if len(receipts) == 1 else "011"
            assert got[-1]["error"]["code"] == code
            assert message["segments"][0]["status"] == "rejected"

    def test_a_multipart_message_is_accepted_when_every_part_is(
        self, smpp_stack: tuple[CarrierStack, str, Receiver], smsc: RunningSmsc
    ) -> None:
        """Each part is answered by the SMSC; the level-1 receipt comes once, for all."""
        stack, receiver_url, receiver = smpp_stack
        path = "/r/multipart"
        message_id = stack.send(
            {"to": "+4915110000015", "content": GSM_LONG, "dlr": True, "dlr-level": 3,
             "dlr-url": receiver_url + path}
        )  # fmt: skip
        (message,) = stack.wait_all([message_id], {"delivered"}, timeout=30)
        assert [s["status"] for s in message["segments"]] == ["delivered"] * 3
        got = wait_for(
            lambda: (
                len(found := [r.json() for r in receiver.snapshot() if r.path == path]) >= 2
                and found
            ),
            20,
            "receipts missing",
        )
        assert sorted((r["level"], r["status"]) for r in got) == [(1, "accepted"), (2, "delivered")]
        parts = [s for s in smsc.submitted if s.pdu.destination_addr.endswith("0000015")]
        assert len(parts) == 3


def segment() -> SegmentSubmission:
    return SegmentSubmission(
        message_id="m0", seq=1, total=1, to="+4915110000009", sender="smsq", udh=b"",
        payload=b"", data_coding=0, text=SHORT, full_text=SHORT,
        receipt_url="http://127.0.0.1:9/carriers/kannel/dlr",
    )  # fmt: skip
