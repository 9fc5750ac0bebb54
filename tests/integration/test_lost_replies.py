"""When a Redis reply is lost (docs/reliability.md): the command ran, the connection dropped
before its answer. No client runs it twice, and what smsq does next neither loses nor
duplicates a task, a segment's submission, an SMPP hand-off or a scheduled job.

A real Redis sits behind `LossyProxy` (tests/lossy_proxy.py), which forwards the armed command
and drops the connection instead of forwarding its reply, once. Inbound paths (carrier
receipts, MOs): test_lost_replies_inbound.py.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import orjson
import pytest
import redis
from celery import Celery

from producer.services import build_services
from tests.integration.lost_replies import SEND, api, assert_unavailable, loaded, tasks
from tests.lossy_proxy import LossyProxy
from worker.carriers.smpp import SmppCarrier
from worker.contract import SEND_SMS, Queue
from worker.queueing import CeleryPublisher, schedule_at
from worker.redis_urls import connect
from worker.scheduler import Scheduler
from worker.sending import Sender
from worker.settings import Settings
from worker.smpp.config import SmppConfig
from worker.smpp.queue import LANES
from worker.store import Message, Store, new_message_id
from worker.store.keys import SCHEDULE_INFLIGHT_KEY, smpp_stream_key

pytestmark = pytest.mark.integration

SMPP = "smsc1"


class TestSendEnqueue:
    @pytest.mark.parametrize(
        ("broker", "needle"),
        [("store", b"EVALSHA"), ("its own", b"LPUSH")],
        ids=["one-write", "broker-publish"],
    )
    def test_a_lost_reply_while_queueing_a_send_queues_one_task(
        self,
        broker: str,
        needle: bytes,
        lossy_proxy: LossyProxy,
        redis_url: str,
        redis_client: redis.Redis,
    ) -> None:
        """The send's task is queued once: in the send's one write (message + task) when the
        broker is the store, or published once by Celery with a broker of its own (the
        reconciler would publish it again, were it really lost). The caller hears 503; its
        repeat with the same Idempotency-Key gets the first answer and queues nothing new."""
        if broker == "store":
            settings = Settings(redis_url=lossy_proxy.url)
        else:
            settings = Settings(redis_url=redis_url, broker_url=lossy_proxy.url)
        services = build_services(settings)
        assert services.publisher.direct is (broker == "store")
        with api(services) as (client, headers):
            lossy_proxy.lose_reply_to(needle)
            reply = client.post("/sms/send", json=SEND, headers=headers)
            assert lossy_proxy.lost.is_set()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]
            assert_unavailable(reply)
            again = client.post("/sms/send", json=SEND, headers=headers)
            assert again.status_code == 202, again.text
            (raw,) = redis_client.lrange(Queue.NORMAL.value, 0, -1)
            assert again.json()["id"] in orjson.loads(raw)["headers"]["argsrepr"]


class TestSmppHandOff:
    def test_a_lost_reply_to_the_xadd_leaves_one_entry(
        self, lossy_proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The segment's entry was added and its reply lost: the send is retried later, and
        queueing the same segment again adds nothing (one entry, one submit_sm)."""
        client = connect(lossy_proxy.url, decode_responses=True)
        try:
            store = Store(client)
            carrier = SmppCarrier(client, SmppConfig(host="smsc", system_id="smsq"), name=SMPP)
            publisher = CeleryPublisher(Celery("lost", broker="memory://"), client, direct=True)
            sender = Sender(store, carrier, publisher, "http://api.test")
            message = Message(
                id=new_message_id(), to=SEND["to"], sender="smsq", content="Code 1", segments=1
            )
            store.create(message)
            loaded(redis_client, "smpp_enqueue")
            lossy_proxy.lose_reply_to(smpp_stream_key(SMPP, "normal").encode())
            first = sender.send(message.id)
            assert lossy_proxy.lost.is_set()
            assert first.retry_in is not None  # Redis did not answer: try again later
            assert client.xlen(smpp_stream_key(SMPP, "normal")) == 1  # it ran
            assert sender.send(message.id).status == "submitting"  # the durable retry's run
            entries = sum(client.xlen(smpp_stream_key(SMPP, lane)) for lane in LANES)
            assert entries == 1
            (segment,) = store.segments(message.id, 1)
            assert segment.status == "sent"  # handed over, waiting for the SMSC's answer
        finally:
            client.close()


class TestSegmentClaim:
    def test_a_claim_whose_reply_was_lost_is_held_by_its_caller(
        self, lossy_proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The claim ran and its reply was lost: the store asks again with the claim's token
        and learns it holds it, so the segment is submitted now, not left claimed by nobody
        (to end `unknown` after the claim lease though nothing was submitted)."""
        client = connect(lossy_proxy.url, decode_responses=True)
        try:
            store = Store(client)
            message = Message(
                id=new_message_id(), to=SEND["to"], sender="smsq", content="Code 1", segments=1
            )
            store.create(message)
            loaded(redis_client, "claim_segment")
            lossy_proxy.lose_reply_to(b"EVALSHA")
            assert store.claim_segment(message.id, 1)
            assert lossy_proxy.lost.is_set()
            (segment,) = store.segments(message.id, 1)
            assert (segment.status, segment.attempts) == ("submitting", 1)
            assert not store.claim_segment(message.id, 1)  # anyone else's claim: refused
        finally:
            client.close()


class TestScheduler:
    def test_a_lost_reply_to_a_due_job_s_publish_publishes_it_once(
        self, lossy_proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """A due job was queued and forgotten in one step whose reply was lost: the
        scheduler's recovery (what it does after any Redis error) republishes nothing."""
        client = connect(lossy_proxy.url, decode_responses=True)
        try:
            publisher = CeleryPublisher(Celery("lost", broker="memory://"), client, direct=True)
            scheduler = Scheduler(client, publisher)
            schedule_at(redis_client, 1, SEND_SMS, ["m1"], Queue.NORMAL.value)
            lossy_proxy.lose_reply_to(b"LPUSH")
            with pytest.raises(redis.ConnectionError):
                scheduler.tick()
            assert lossy_proxy.lost.is_set()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]  # it ran
            scheduler.recover()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]
            assert redis_client.hlen(SCHEDULE_INFLIGHT_KEY) == 0
        finally:
            client.close()


class TestTheProxy:
    def test_a_client_with_redis_py_s_default_retry_runs_a_lost_write_twice(
        self, lossy_proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """The hazard these tests guard against: `redis.Redis(host=...)` retries by default,
        so a lost reply to an XADD adds two entries."""
        where = urlsplit(lossy_proxy.url)
        retrying = redis.Redis(
            host=where.hostname or "",
            port=where.port or 0,
            db=int(where.path.strip("/") or 0),
            password=unquote(where.password or "") or None,
        )
        try:
            lossy_proxy.lose_reply_to(b"XADD")
            retrying.xadd("hazard", {"n": "1"})
            assert lossy_proxy.lost.is_set()
            assert redis_client.xlen("hazard") == 2
        finally:
            retrying.close()
