"""The `kannel` adapter against a real Kannel (bearerbox + smsbox + its fake SMSC).

Multipart GSM and UCS-2 messages must arrive intact at the fake SMSC (reassembled here from
the UDH of each part), and the receipts Kannel fetches from our `dlr-url` must come back in
and correlate, so that the messages end `delivered`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="module")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    with running_kannel(Path(tmp_path_factory.mktemp("kannel"))) as running:
        yield running


@pytest.fixture(scope="module")
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


def segment() -> SegmentSubmission:
    return SegmentSubmission(
        message_id="m0", seq=1, total=1, to="+4915110000009", sender="smsq", udh=b"",
        payload=b"", data_coding=0, text=SHORT, full_text=SHORT,
        receipt_url="http://127.0.0.1:9/carriers/kannel/dlr",
    )  # fmt: skip
