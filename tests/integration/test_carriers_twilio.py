"""The `twilio` adapter against a local server that follows Twilio's published formats.

Whole texts go to `Messages.json` (form-encoded, Basic auth); Twilio's signed status callbacks
come back to `/carriers/twilio/dlr`, are validated and move the messages to `delivered`; a
callback with a bad signature is refused (403) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.carrier_stack import CarrierStack, carrier_stack
from tests.integration.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.integration.stack import wait_for
from tests.servers import serve_app
from worker.carriers.twilio import signature
from worker.inbound import UNKNOWN_RECEIPTS_KEY

pytestmark = pytest.mark.integration

LONG = "Ünïcödé is fine too: Twilio segments the whole text itself. 😀 " * 4
SENDER = "+15005550006"


@pytest.fixture(scope="module")
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    fake = FakeTwilio()
    with serve_app(fake.app()) as url:
        yield fake, url


@pytest.fixture(scope="module")
def stack(redis_server_url: str, twilio: tuple[FakeTwilio, str]) -> Iterator[CarrierStack]:
    env = {
        "SMSQ_CARRIER": "twilio",
        "SMSQ_CARRIER_URL": twilio[1],
        "SMSQ_CARRIER_USERNAME": ACCOUNT_SID,
        "SMSQ_CARRIER_PASSWORD": AUTH_TOKEN,
    }
    with carrier_stack(redis_server_url, env) as running:
        yield running


class TestTwilio:
    def test_whole_text_goes_and_signed_callbacks_deliver(
        self, stack: CarrierStack, twilio: tuple[FakeTwilio, str]
    ) -> None:
        """One request per message with the text; the signed callbacks deliver it."""
        fake, _ = twilio
        message_id = stack.send({"to": "+4915120000002", "from": SENDER, "content": "Code 4711"})
        (message,) = stack.wait_all([message_id], {"delivered"}, timeout=20)
        (created,) = [m for m in fake.snapshot() if m["to"] == "+4915120000002"]
        assert (created["body"], created["from"]) == ("Code 4711", SENDER)
        (segment,) = message["segments"]
        assert segment["carrier"] == "twilio"
        assert segment["carrier_id"] == created["sid"]

    def test_long_text_goes_whole(
        self, stack: CarrierStack, twilio: tuple[FakeTwilio, str]
    ) -> None:
        """A 4-segment text goes in one request, whole; Twilio segments it."""
        fake, _ = twilio
        message_id = stack.send({"to": "+4915120000001", "from": SENDER, "content": LONG})
        wait_for(lambda: stack.message(message_id)["status"] != "queued", 20, "never submitted")
        created = wait_for(
            lambda: [m for m in fake.snapshot() if m["to"] == "+4915120000001"], 20, "not sent"
        )
        assert [(m["body"], m["num_segments"]) for m in created] == [(LONG, "4")]

    def test_long_text_is_delivered(self, stack: CarrierStack) -> None:
        """Twilio's one callback for a long text delivers the whole message."""
        message_id = stack.send({"to": "+4915120000005", "from": SENDER, "content": LONG})
        stack.wait_all([message_id], {"delivered"}, timeout=4)

    def test_forged_callback_changes_nothing(
        self, stack: CarrierStack, twilio: tuple[FakeTwilio, str]
    ) -> None:
        """A callback signed with another token is refused at the door and changes nothing."""
        fake, _ = twilio
        fake.callbacks_open.clear()  # keep the real callbacks back while we forge one
        try:
            message_id = stack.send({"to": "+4915120000003", "from": SENDER, "content": "x"})
            stack.wait_all([message_id], {"accepted"}, timeout=20)
            sid = stack.message(message_id)["segments"][0]["carrier_id"]
            # Other test files share this Redis: count what this forgery could add, not the total.
            unknown_before = stack.redis.llen(UNKNOWN_RECEIPTS_KEY)
            url = f"{stack.api_url}/carriers/twilio/dlr"
            params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
            forged = {"x-twilio-signature": signature(url, params, "not-the-token")}
            assert httpx.post(url, data=params, headers=forged).status_code == 403
            assert stack.redis.llen(UNKNOWN_RECEIPTS_KEY) == unknown_before
            assert stack.message(message_id)["status"] == "accepted"
        finally:
            fake.callbacks_open.set()
        (message,) = stack.wait_all([message_id], {"delivered"}, timeout=20)
        assert message["segments"][0]["error"] is None

    def test_bad_number_is_rejected(
        self, stack: CarrierStack, twilio: tuple[FakeTwilio, str]
    ) -> None:
        """Twilio's 400/21211 for the number is permanent: the message fails, code kept."""
        twilio[0].refused_numbers.add("+4915120000004")
        message_id = stack.send({"to": "+4915120000004", "from": SENDER, "content": "hi"})
        (message,) = stack.wait_all([message_id], {"failed", "rejected"}, timeout=20)
        assert message["segments"][0]["error"]["code"] == "21211"
