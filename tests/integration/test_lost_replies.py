"""When a Redis reply is lost (docs/reliability.md): the command ran, the connection dropped
before its answer. Nothing is run twice by a client, and what smsq does next neither loses nor
duplicates a message, a task, an SMPP hand-off or a carrier receipt.

A real Redis sits behind `LossyProxy` (tests/lossy_proxy.py), which forwards the armed command
and drops the connection instead of forwarding its reply, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import orjson
import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.services import Services, build_services
from tests.lossy_proxy import LossyProxy
from worker import mo
from worker.carriers.smpp import SmppCarrier
from worker.clock import now_ms
from worker.contract import SEND_SMS, Queue
from worker.inbound import ReceiptIntake
from worker.queueing import INFLIGHT_KEY, CeleryPublisher, schedule_at
from worker.receipts.tokens import receipt_key, segment_token
from worker.redis_urls import connect
from worker.scheduler import Scheduler
from worker.sending import Sender
from worker.settings import Settings
from worker.smpp.config import SmppConfig
from worker.smpp.inbound import MobileOriginated
from worker.smpp.outcomes import Batch, Outcomes
from worker.smpp.queue import LANES, SegmentQueue, stream_key
from worker.store import Message, Store, lua_scripts, new_message_id
from worker.store.inbox import Inbox
from worker.store.keys import INBOX_KEY, mo_index_key
from worker.store.mo import NO_OWNER, new_mo_id

pytestmark = pytest.mark.integration

SEND = {"to": "+14155552671", "from": "smsq", "content": "Your code is 123456"}
SMPP = "smsc1"
SECRET_KEY = "lost-replies-server-key"


@pytest.fixture
def proxy(redis_url: str) -> Iterator[LossyProxy]:
    with LossyProxy(redis_url) as running:
        yield running


@contextmanager
def api(services: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A client of the API on `services` (closed after), and a key's headers for a send."""
    try:
        key = services.keys.create("lost-replies").api_key
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            yield client, {"authorization": f"Bearer {key}", "idempotency-key": "order-1"}
    finally:
        services.publisher.app.close()
        services.redis.close()


def tasks(client: redis.Redis, queue: str) -> list[str]:
    """The task names waiting in a Celery queue list."""
    return [orjson.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]


def loaded(client: redis.Redis, script: str) -> None:
    """Load a store script, so that its EVALSHA runs (a NOSCRIPT answer would run nothing)."""
    client.script_load(lua_scripts.source(script))


def assert_unavailable(reply: object) -> None:
    """The API's answer to a lost reply: 503, the JSON error shape, try again soon."""
    assert getattr(reply, "status_code", None) == 503, getattr(reply, "text", reply)
    assert reply.json()["error"]["code"] == "unavailable"  # type: ignore[attr-defined]
    assert reply.headers["retry-after"] == "1"  # type: ignore[attr-defined]


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
        proxy: LossyProxy,
        redis_url: str,
        redis_client: redis.Redis,
    ) -> None:
        """The send's task is queued once: in the send's one write (message + task) when the
        broker is the store, or published once by Celery with a broker of its own (the
        reconciler would publish it again, were it really lost). The caller hears 503; its
        repeat with the same Idempotency-Key gets the first answer and queues nothing new."""
        if broker == "store":
            settings = Settings(redis_url=proxy.url)
        else:
            settings = Settings(redis_url=redis_url, broker_url=proxy.url)
        services = build_services(settings)
        assert services.publisher.direct is (broker == "store")
        with api(services) as (client, headers):
            proxy.lose_reply_to(needle)
            reply = client.post("/sms/send", json=SEND, headers=headers)
            assert proxy.lost.is_set()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]
            assert_unavailable(reply)
            again = client.post("/sms/send", json=SEND, headers=headers)
            assert again.status_code == 202, again.text
            (raw,) = redis_client.lrange(Queue.NORMAL.value, 0, -1)
            assert again.json()["id"] in orjson.loads(raw)["headers"]["argsrepr"]


class TestSmppHandOff:
    def test_a_lost_reply_to_the_xadd_leaves_one_entry(
        self, proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The segment's entry was added and its reply lost: the send is retried later, and
        queueing the same segment again adds nothing (one entry, one submit_sm)."""
        client = connect(proxy.url, decode_responses=True)
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
            proxy.lose_reply_to(stream_key(SMPP, "normal").encode())
            first = sender.send(message.id)
            assert proxy.lost.is_set()
            assert first.retry_in is not None  # Redis did not answer: try again later
            assert client.xlen(stream_key(SMPP, "normal")) == 1  # it ran
            assert sender.send(message.id).status == "submitting"  # the durable retry's run
            entries = sum(client.xlen(stream_key(SMPP, lane)) for lane in LANES)
            assert entries == 1
            (segment,) = store.segments(message.id, 1)
            assert segment.status == "sent"  # handed over, waiting for the SMSC's answer
        finally:
            client.close()


class TestSegmentClaim:
    def test_a_claim_whose_reply_was_lost_is_held_by_its_caller(
        self, proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The claim ran and its reply was lost: the store asks again with the claim's token
        and learns it holds it, so the segment is submitted now, not left claimed by nobody
        (to end `unknown` after the claim lease though nothing was submitted)."""
        client = connect(proxy.url, decode_responses=True)
        try:
            store = Store(client)
            message = Message(
                id=new_message_id(), to=SEND["to"], sender="smsq", content="Code 1", segments=1
            )
            store.create(message)
            loaded(redis_client, "claim_segment")
            proxy.lose_reply_to(b"EVALSHA")
            assert store.claim_segment(message.id, 1)
            assert proxy.lost.is_set()
            (segment,) = store.segments(message.id, 1)
            assert (segment.status, segment.attempts) == ("submitting", 1)
            assert not store.claim_segment(message.id, 1)  # anyone else's claim: refused
        finally:
            client.close()


class TestScheduler:
    def test_a_lost_reply_to_a_due_job_s_publish_publishes_it_once(
        self, proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """A due job was queued and forgotten in one step whose reply was lost: the
        scheduler's recovery (what it does after any Redis error) republishes nothing."""
        client = connect(proxy.url, decode_responses=True)
        try:
            publisher = CeleryPublisher(Celery("lost", broker="memory://"), client, direct=True)
            scheduler = Scheduler(client, publisher)
            schedule_at(redis_client, 1, SEND_SMS, ["m1"], Queue.NORMAL.value)
            proxy.lose_reply_to(b"LPUSH")
            with pytest.raises(redis.ConnectionError):
                scheduler.tick()
            assert proxy.lost.is_set()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]  # it ran
            scheduler.recover()
            assert tasks(redis_client, Queue.NORMAL.value) == [SEND_SMS]
            assert redis_client.hlen(INFLIGHT_KEY) == 0
        finally:
            client.close()


class TestCarrierReceiptsIn:
    def test_a_lost_reply_to_an_inbox_push_keeps_one_entry(
        self, proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """The request was kept once; the push raises (the API answers 503: the carrier sends
        it again, and applying a receipt twice changes nothing) instead of keeping it twice."""
        client = connect(proxy.url, decode_responses=True)
        try:
            loaded(redis_client, "inbox_put")
            proxy.lose_reply_to(b"EVALSHA")
            with pytest.raises(redis.ConnectionError):
                Inbox(client).put("sim", {"body": "eyJpZCI6ICJ4In0="}, 1)
            assert proxy.lost.is_set()
            assert redis_client.hlen(INBOX_KEY) == 1
        finally:
            client.close()

    def test_the_receipt_route_answers_503_when_the_reply_is_lost(
        self, proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """A carrier's receipt request whose push lost its reply is answered 503 (the carrier
        retries), never a plain 500, and is kept once."""
        settings = Settings(redis_url=proxy.url, secret_key=SECRET_KEY)
        services = build_services(settings)
        ref = f"{new_message_id()}:1"
        token = segment_token(receipt_key(SECRET_KEY) or b"", ref)
        with api(services) as (client, _headers):
            loaded(redis_client, "inbox_put")
            proxy.lose_reply_to(b"EVALSHA")
            reply = client.post(
                f"/carriers/sim/dlr?ref={ref}&token={token}",
                json={"id": "sim-1", "status": "delivered"},
            )
            assert proxy.lost.is_set()
            assert_unavailable(reply)
            assert redis_client.hlen(INBOX_KEY) == 1


class TestInboundMessages:
    @pytest.mark.parametrize(
        "needle", [b"mo:seen", b"EXEC"], ids=["carrier-id-marked", "mo-stored"]
    )
    def test_a_carrier_s_repeat_after_a_lost_reply_stores_the_mo_once(
        self, needle: bytes, proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The carrier's id was marked (or the MO stored) and the reply lost: the call fails,
        the carrier sends the MO again, and it is stored exactly once — neither taken for a
        repeat of an MO never stored, nor stored twice."""
        client = connect(proxy.url, decode_responses=True)
        try:
            proxy.lose_reply_to(needle)
            with pytest.raises(redis.ConnectionError):
                mo.accept(client, "sim", SEND["to"], "+14155550100", "STOP", received_at=1,
                          carrier_id="SM-1")  # fmt: skip
            assert proxy.lost.is_set()
            first = mo.accept(client, "sim", SEND["to"], "+14155550100", "STOP", received_at=2,
                              carrier_id="SM-1")  # fmt: skip
            assert redis_client.zrange(mo_index_key(NO_OWNER), 0, -1) == [first]
        finally:
            client.close()

    def test_an_smpp_batch_stored_again_stores_its_mo_once(
        self, proxy: LossyProxy, redis_client: redis.Redis
    ) -> None:
        """The connector stores a deliver_sm's MO, loses the reply and stores the batch again
        (as it does after any failure): the MO's id, chosen when it came, makes that a repeat."""
        client = connect(proxy.url, decode_responses=True)
        raw = connect(proxy.url)
        try:
            segments = SegmentQueue(raw, SMPP, "me")
            intake = ReceiptIntake(Store(client), CeleryPublisher(Celery("lost"), client))
            outcomes = Outcomes(SMPP, segments, intake)
            at = now_ms()
            batch = Batch(messages=[
                MobileOriginated(SEND["to"], "+14155550100", "hi", b"", at, new_mo_id(at))
            ])  # fmt: skip
            proxy.lose_reply_to(b"EXEC")
            with pytest.raises(redis.ConnectionError):
                outcomes.store(batch)
            assert proxy.lost.is_set()
            outcomes.store(batch)
            (stored,) = redis_client.zrange(mo_index_key(NO_OWNER), 0, -1)
            assert stored == batch.messages[0].mo_id
        finally:
            raw.close()
            client.close()


class TestTheProxy:
    def test_a_client_with_redis_py_s_default_retry_runs_a_lost_write_twice(
        self, proxy: LossyProxy, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """The hazard these tests guard against: `redis.Redis(host=...)` retries by default,
        so a lost reply to an XADD adds two entries."""
        where = urlsplit(proxy.url)
        retrying = redis.Redis(
            host=where.hostname or "",
            port=where.port or 0,
            db=int(where.path.strip("/") or 0),
            password=unquote(where.password or "") or None,
        )
        try:
            proxy.lose_reply_to(b"XADD")
            retrying.xadd("hazard", {"n": "1"})
            assert proxy.lost.is_set()
            assert redis_client.xlen("hazard") == 2
        finally:
            retrying.close()
