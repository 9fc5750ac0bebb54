"""The pipeline end to end: API → Redis → Celery worker → carrier simulator → receipts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.stack import SECRET_KEY, Stack, running_stack, wait_for
from worker.receipts.tokens import receipt_key, segment_token
from worker.simulator import SimulatorConfig

pytestmark = pytest.mark.integration

TO = "+14155552671"
UCS2_LONG = "Привет, мир! " * 12  # 156 Cyrillic characters: 3 UCS-2 segments
GSM_LONG = "The quick brown fox jumps over the lazy dog. " * 5  # 225 septets: 2 segments


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    sim = SimulatorConfig(receipt_delay=0.05, reject_prefixes=("+1415555999",))
    with running_stack(redis_server_url, sim=sim) as running:
        yield running


def receipt_body(stack: Stack, **extra: Any) -> dict[str, Any]:
    return {
        "to": TO,
        "from": "smsq",
        "content": "Your code is 123456",
        "dlr": True,
        "dlr-url": f"{stack.receiver_url}/receipts",
        **extra,
    }


def receipts_for(stack: Stack, message_id: str, count: int) -> list[dict[str, Any]]:
    """The receipts for one message, in arrival order, once `count` of them arrived."""

    def collect() -> list[dict[str, Any]] | None:
        found = [r for r in stack.receiver.snapshot() if message_id in (r.body.decode() + r.query)]
        return [_decode(r.method, r.body, r.query) for r in found] if len(found) >= count else None

    result: list[dict[str, Any]] = wait_for(
        collect, 30, f"{count} receipts for {message_id} did not arrive"
    )
    return result


def _decode(method: str, body: bytes, query: str) -> dict[str, Any]:
    if method == "POST":
        import orjson

        result: dict[str, Any] = orjson.loads(body)
        return result
    return dict(parse_qsl(query))


class TestSend:
    def test_single_gsm_message_reaches_the_carrier_intact(self, stack: Stack) -> None:
        """A one-segment GSM message arrives whole at the simulator and ends delivered."""
        reply = stack.send({"to": TO, "from": "smsq", "content": "Hello [world] €5"})
        assert reply.status_code == 202, reply.text
        body = reply.json()
        assert body["status"] == "queued"
        assert (body["encoding"], body["segments"]) == ("gsm7", 1)
        message = stack.wait_status(body["id"], {"delivered"})
        assert message["segments"][0]["carrier_id"].startswith("sim-")
        texts = [m["text"] for m in stack.sim_stats()["messages"]]
        assert "Hello [world] €5" in texts

    @pytest.mark.parametrize(
        ("content", "encoding", "segments"),
        [(GSM_LONG, "gsm7", 2), (UCS2_LONG, "ucs2", 3), ("👍" * 40, "ucs2", 2)],
    )
    def test_multipart_message_is_reassembled_by_the_carrier(
        self, stack: Stack, content: str, encoding: str, segments: int
    ) -> None:
        """Every segment is submitted once and the carrier reassembles the exact text."""
        reply = stack.send({"to": TO, "content": content})
        assert reply.status_code == 202, reply.text
        assert (reply.json()["encoding"], reply.json()["segments"]) == (encoding, segments)
        message_id = reply.json()["id"]
        message = stack.wait_status(message_id, {"delivered"})
        assert [s["status"] for s in message["segments"]] == ["delivered"] * segments
        stats = stack.sim_stats()
        refs = [f"{message_id}:{seq}" for seq in range(1, segments + 1)]
        assert all(stats["by_client_ref"].get(ref) == 1 for ref in refs)
        assert any(m["text"] == content for m in stats["messages"])
        assert stats["duplicates"] == []
        assert stats["mismatches"] == []

    def test_status_shows_events_with_utc_millisecond_times(self, stack: Stack) -> None:
        """GET /sms/{id} lists the history with ISO 8601 UTC millisecond timestamps."""
        message_id = stack.send({"to": TO, "content": "events"}).json()["id"]
        message = stack.wait_status(message_id, {"delivered"})
        events = [e["event"] for e in message["events"]]
        assert events[0] == "accepted"
        assert "submitting" in events
        assert events[-1] == "delivered"
        assert all(e["at"].endswith("Z") and len(e["at"]) == 24 for e in message["events"])


class TestReceipts:
    @pytest.mark.parametrize("method", ["POST", "GET"])
    def test_level_three_sends_both_receipts_in_order(self, stack: Stack, method: str) -> None:
        """Level 3 gives a level-1 then a level-2 receipt, signed, with increasing seq."""
        body = receipt_body(stack, **{"dlr-level": 3, "dlr-method": method, "client_ref": "r-3"})
        message_id = stack.send(body).json()["id"]
        first, second = receipts_for(stack, message_id, 2)
        assert (str(first["level"]), first["status"], first["message_status"]) == (
            "1",
            "accepted",
            "ESME_ROK",
        )
        assert (str(second["level"]), second["status"], second["message_status"]) == (
            "2",
            "delivered",
            "DELIVRD",
        )
        assert int(first["seq"]) < int(second["seq"])
        assert first["client_ref"] == second["client_ref"] == "r-3"

    def test_receipt_signature_verifies_with_the_reference_library(self, stack: Stack) -> None:
        """The Standard Webhooks reference verifier accepts the receipt's signature."""
        message_id = stack.send(receipt_body(stack, **{"dlr-level": 1})).json()["id"]
        receipts_for(stack, message_id, 1)
        raw = next(r for r in stack.receiver.snapshot() if message_id.encode() in r.body)
        verified = Webhook(stack.key.webhook_secret).verify(raw.body, raw.headers)
        assert verified["id"] == message_id
        assert raw.headers["webhook-id"] == f"evt_{message_id}_1"

    def test_level_one_only_sends_one_receipt(self, stack: Stack) -> None:
        """Level 1 alone reports the carrier's acceptance and nothing more."""
        message_id = stack.send(receipt_body(stack, **{"dlr-level": 1})).json()["id"]
        (receipt,) = receipts_for(stack, message_id, 1)
        stack.wait_status(message_id, {"delivered"})
        assert receipt["status"] == "accepted"
        assert receipt["segments"]["total"] == 1
        # Delivered means the carrier's receipt was applied, which opens any receipt of the
        # levels asked for in the same step: none but level 1 was opened.
        fields = [str(f) for f in stack.redis.hkeys(f"smsq:msg:{message_id}")]
        assert [f for f in fields if f.startswith("rcpt:") and not f.startswith("rcpt:1:")] == []
        assert len(receipts_for(stack, message_id, 1)) == 1

    def test_rejection_at_level_two_only_still_reports(self, stack: Stack) -> None:
        """With level 2 alone, a carrier rejection still produces a final receipt."""
        body = receipt_body(stack, to="+14155559990", **{"dlr-level": 2})
        message_id = stack.send(body).json()["id"]
        (receipt,) = receipts_for(stack, message_id, 1)
        assert (receipt["level"], receipt["status"], receipt["message_status"]) == (
            2,
            "rejected",
            "REJECTD",
        )
        assert receipt["error"]["code"] == "invalid_destination"


class TestCarrierReceiptsIn:
    def test_unknown_carrier_id_is_recorded_and_answered_200(self, stack: Stack) -> None:
        """An authenticated receipt for an id we never issued gets 200 and is recorded, not a
        crash."""
        key = receipt_key(SECRET_KEY)
        assert key is not None
        reply = httpx.post(
            f"{stack.api_url}/carriers/sim/dlr?ref=nobody:1&token={segment_token(key, 'nobody:1')}",
            json={"carrier_id": "sim-nobody", "status": "DELIVRD", "err": "000"},
        )
        assert reply.status_code == 200
        wait_for(
            lambda: any(
                "sim-nobody" in e
                for e in stack.redis.lrange("smsq:carrier-receipts:unknown", 0, -1)
            ),
            20,
            "the unknown receipt was not recorded",
        )

    def test_unknown_carrier_name_is_404(self, stack: Stack) -> None:
        """Receipts for a carrier smsq does not know are refused with a JSON 404."""
        reply = httpx.post(f"{stack.api_url}/carriers/nope/dlr", json={})
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"


class TestAuth:
    def test_send_without_a_key_is_401(self, stack: Stack) -> None:
        """No Authorization header: 401 with the JSON error shape."""
        reply = httpx.post(f"{stack.api_url}/sms/send", json={"to": TO, "content": "x"})
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"

    def test_another_keys_message_is_404(self, stack: Stack) -> None:
        """A key cannot see messages sent with another key."""
        from worker.keys import KeyStore

        message_id = stack.send({"to": TO, "content": "mine"}).json()["id"]
        other = KeyStore(stack.redis).create("other").api_key
        reply = httpx.get(
            f"{stack.api_url}/sms/{message_id}", headers={"authorization": f"Bearer {other}"}
        )
        assert reply.status_code == 404
