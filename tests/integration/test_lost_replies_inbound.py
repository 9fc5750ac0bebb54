"""When a Redis reply is lost on the way in (docs/reliability.md): a carrier's receipt request
and an MO (over HTTP, with the carrier's id, and over SMPP) are kept exactly once, and the API
answers 503 so that the carrier sends again. The proxy: tests/lossy_proxy.py.
"""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from producer.services import build_services
from tests.integration.lost_replies import SEND, api, assert_unavailable, loaded
from tests.lossy_proxy import LossyProxy
from worker import mo
from worker.clock import now_ms
from worker.inbound import ReceiptIntake
from worker.queueing import CeleryPublisher
from worker.receipts.tokens import receipt_key, segment_token
from worker.redis_urls import connect
from worker.settings import Settings
from worker.smpp.inbound import MobileOriginated
from worker.smpp.outcomes import Batch, Outcomes
from worker.smpp.queue import SegmentQueue
from worker.store import Store, new_message_id
from worker.store.inbox import Inbox
from worker.store.keys import INBOX_KEY, mo_index_key
from worker.store.mo import NO_OWNER, new_mo_id

pytestmark = pytest.mark.integration

SMPP = "smsc1"
SECRET_KEY = "lost-replies-server-key"


class TestCarrierReceiptsIn:
    def test_a_lost_reply_to_an_inbox_push_keeps_one_entry(
        self, lossy_proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """The request was kept once; the push raises (the API answers 503: the carrier sends
        it again, and applying a receipt twice changes nothing) instead of keeping it twice."""
        client = connect(lossy_proxy.url, decode_responses=True)
        try:
            loaded(redis_client, "inbox_put")
            lossy_proxy.lose_reply_to(b"EVALSHA")
            with pytest.raises(redis.ConnectionError):
                Inbox(client).put("sim", {"body": "eyJpZCI6ICJ4In0="}, 1)
            assert lossy_proxy.lost.is_set()
            assert redis_client.hlen(INBOX_KEY) == 1
        finally:
            client.close()

    def test_the_receipt_route_answers_503_when_the_reply_is_lost(
        self, lossy_proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """A carrier's receipt request whose push lost its reply is answered 503 (the carrier
        retries), never a plain 500, and is kept once."""
        settings = Settings(redis_url=lossy_proxy.url, secret_key=SECRET_KEY)
        services = build_services(settings)
        ref = f"{new_message_id()}:1"
        token = segment_token(receipt_key(SECRET_KEY) or b"", ref)
        with api(services) as (client, _headers):
            loaded(redis_client, "inbox_put")
            lossy_proxy.lose_reply_to(b"EVALSHA")
            reply = client.post(
                f"/carriers/sim/dlr?ref={ref}&token={token}",
                json={"id": "sim-1", "status": "delivered"},
            )
            assert lossy_proxy.lost.is_set()
            assert_unavailable(reply)
            assert redis_client.hlen(INBOX_KEY) == 1


class TestInboundMessages:
    @pytest.mark.parametrize(
        "needle", [b"mo:seen", b"EXEC"], ids=["carrier-id-marked", "mo-stored"]
    )
    def test_a_carrier_s_repeat_after_a_lost_reply_stores_the_mo_once(
        self, needle: bytes, lossy_proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The carrier's id was marked (or the MO stored) and the reply lost: the call fails,
        the carrier sends the MO again, and it is stored exactly once — neither taken for a
        repeat of an MO never stored, nor stored twice."""
        client = connect(lossy_proxy.url, decode_responses=True)
        try:
            lossy_proxy.lose_reply_to(needle)
            with pytest.raises(redis.ConnectionError):
                mo.accept(client, "sim", SEND["to"], "+14155550100", "STOP", received_at=1,
                          carrier_id="SM-1")  # fmt: skip
            assert lossy_proxy.lost.is_set()
            first = mo.accept(client, "sim", SEND["to"], "+14155550100", "STOP", received_at=2,
                              carrier_id="SM-1")  # fmt: skip
            assert redis_client.zrange(mo_index_key(NO_OWNER), 0, -1) == [first]
        finally:
            client.close()

    def test_an_smpp_batch_stored_again_stores_its_mo_once(
        self, lossy_proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The connector stores a deliver_sm's MO, loses the reply and stores the batch again
        (as it does after any failure): the MO's id, chosen when it came, makes that a repeat."""
        client = connect(lossy_proxy.url, decode_responses=True)
        raw = connect(lossy_proxy.url)
        try:
            segments = SegmentQueue(raw, SMPP, "me")
            intake = ReceiptIntake(Store(client), CeleryPublisher(Celery("lost"), client))
            outcomes = Outcomes(SMPP, segments, intake)
            at = now_ms()
            batch = Batch(messages=[
                MobileOriginated(SEND["to"], "+14155550100", "hi", b"", at, new_mo_id(at))
            ])  # fmt: skip
            lossy_proxy.lose_reply_to(b"EXEC")
            with pytest.raises(redis.ConnectionError):
                outcomes.store(batch)
            assert lossy_proxy.lost.is_set()
            outcomes.store(batch)
            (stored,) = redis_client.zrange(mo_index_key(NO_OWNER), 0, -1)
            assert stored == batch.messages[0].mo_id
        finally:
            raw.close()
            client.close()
