"""One SMPP session (`worker.smpp.session`) against the SMSC stand-in, in one event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from tests.smpp.smsc import Outcome, Smsc
from tests.unit.test_receipt_intake_auth import Jobs
from worker.contract import SegmentStatus
from worker.inbound import Parking, ReceiptIntake
from worker.smpp.config import SmppConfig
from worker.smpp.flow import TokenBucket, Window
from worker.smpp.link import CarrierLink
from worker.smpp.outcomes import Outcomes
from worker.smpp.pdu import Command, Pdu, ShortMessage, Status, message_id_of
from worker.smpp.queue import Entry, SegmentQueue
from worker.smpp.session import BindError, Endpoint, NoResponseError, Session, SessionClosedError
from worker.store import Store

SUBMIT = ShortMessage("smsq", "4915112345678", b"hi", registered_delivery=1).encode()


def run(scenario: Callable[[Smsc, Endpoint], Awaitable[None]], smsc: Smsc) -> None:
    async def main() -> None:
        port = await smsc.start()
        try:
            await scenario(smsc, Endpoint("127.0.0.1", port, "smsq", "secret"))
        finally:
            await smsc.close()

    asyncio.run(main())


class TestSession:
    def test_binds_submits_and_hears_the_receipt(self) -> None:
        """The submit_sm_resp names the message; its receipt arrives as a deliver_sm."""
        delivered: list[Pdu] = []

        async def scenario(smsc: Smsc, endpoint: Endpoint) -> None:
            session = Session(endpoint, "transceiver", lambda s, pdu: delivered.append(pdu))
            await session.open()
            answer = await asyncio.wait_for(session.request(Command.SUBMIT_SM, SUBMIT), 5)
            assert (answer.status, message_id_of(answer.body)) == (Status.ROK, "1")
            while not delivered:
                await asyncio.sleep(0.01)
            session.respond(delivered[0], body=b"\0")
            await session.unbind()
            assert session.closed.done()

        run(scenario, Smsc(password="secret"))
        assert delivered[0].command == Command.DELIVER_SM

    def test_a_wrong_password_is_a_bind_error(self) -> None:
        async def scenario(smsc: Smsc, endpoint: Endpoint) -> None:
            with pytest.raises(BindError) as refused:
                await Session(endpoint, "transceiver", lambda s, p: None).open()
            assert refused.value.status == Status.RINVPASWD

        run(scenario, Smsc(password="other"))

    def test_no_answer_in_time_fails_the_request(self) -> None:
        """A submit_sm_resp slower than `response_timeout`: NoResponseError (unknown)."""

        async def scenario(smsc: Smsc, endpoint: Endpoint) -> None:
            session = Session(endpoint, "transceiver", lambda s, p: None, response_timeout=0.2)
            await session.open()
            with pytest.raises(NoResponseError):
                await asyncio.wait_for(session.request(Command.SUBMIT_SM, SUBMIT), 5)
            session.close()

        run(scenario, Smsc(lambda to: Outcome(resp_delay=3.0)))

    def test_a_dropped_connection_fails_what_was_open(self) -> None:
        """The SMSC hangs up with a submit_sm unanswered: it fails with SessionClosedError."""

        async def scenario(smsc: Smsc, endpoint: Endpoint) -> None:
            session = Session(endpoint, "transceiver", lambda s, p: None)
            await session.open()
            pending = session.request(Command.SUBMIT_SM, SUBMIT)
            await asyncio.sleep(0.05)
            smsc.drop_all()
            with pytest.raises(SessionClosedError):
                await asyncio.wait_for(pending, 5)
            assert session.closed.done()

        run(scenario, Smsc(lambda to: Outcome(resp_delay=3.0)))


class TestTokenBucket:
    def test_only_now_takes_a_free_slot_or_nothing(self) -> None:
        """At 1/s with bursts of 2: two slots now, the third not (nothing taken for it)."""
        bucket = TokenBucket(1.0, 2)
        assert [bucket.reserve(only_now=True) for _ in range(3)] == [0.0, 0.0, None]
        assert TokenBucket(0).reserve(only_now=True) == 0.0  # no limit


class TestStaleEntries:
    def test_an_entry_queued_past_the_deadline_is_failed_unsent(self) -> None:
        """Queued longer than `max_age` (the reconciler's deadline for the SMSC's answer):
        failed, never written; a fresh one behind it goes."""
        client = fakeredis.FakeRedis()
        segments = SegmentQueue(client, "up", "me")
        store = Store(fakeredis.FakeRedis(decode_responses=True))
        outcomes = Outcomes("up", segments, ReceiptIntake(store, Jobs(), parking=Parking()))

        async def scenario(executor: ThreadPoolExecutor) -> None:
            config = SmppConfig(host="smsc", system_id="smsq")
            link = CarrierLink("up", config, "pw", segments, outcomes, executor, max_age=60)
            now = int(time.time() * 1000)
            stale, fresh = Entry(f"{now - 61_000}-0", "m1:1", b""), Entry(f"{now}-0", "m2:1", b"")
            link.ready.extend([stale, fresh])
            assert link._take_batch(Window(10)) == [fresh]
            (answer,) = link._batch.answers
            assert (answer.entry, answer.status, answer.error_code) == (
                stale, SegmentStatus.FAILED, "not_sent",
            )  # fmt: skip

        with ThreadPoolExecutor(1) as executor:
            asyncio.run(scenario(executor))
