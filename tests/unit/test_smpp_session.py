"""One SMPP session (`worker.smpp.session`) against the SMSC stand-in, in one event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fakeredis
import pytest

from tests.smpp.smsc import Outcome, Smsc
from tests.unit.test_receipt_intake_auth import Jobs
from worker.contract import SegmentStatus
from worker.inbound import Parking, ReceiptIntake
from worker.smpp import queue
from worker.smpp.config import SmppConfig
from worker.smpp.flow import TokenBucket, Window
from worker.smpp.link import CarrierLink
from worker.smpp.outcomes import Outcomes
from worker.smpp.pdu import Command, Pdu, ShortMessage, Status, message_id_of
from worker.smpp.queue import Entry, SegmentQueue
from worker.smpp.session import BindError, Endpoint, NoResponseError, Session, SessionClosedError
from worker.store import Store, keys

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


class GatedRedis(fakeredis.FakeRedis):
    """A fake Redis whose HSET (entries marked written) waits for `go` once it has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.begun, self.go = threading.Event(), threading.Event()

    def hset(self, *args: Any, **kwargs: Any) -> Any:
        self.begun.set()
        self.go.wait(5)
        return super().hset(*args, **kwargs)


class CountingExecutor(ThreadPoolExecutor):
    """Counts the jobs it was given."""

    def __init__(self, threads: int) -> None:
        super().__init__(threads)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


async def until(condition: Callable[[], bool]) -> None:
    """Poll (bounded) until `condition` holds."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


class Preparing:
    """A link over the stand-in with one queued entry, its batch being prepared (the mark on
    its way, held in a thread) when a test stops the link."""

    def __init__(self, threads: int = 2) -> None:
        self.client = GatedRedis()
        self.segments = SegmentQueue(self.client, "up", "me")
        self.segments.create_group()
        queue.enqueue(self.client, "up", "m1:1", SUBMIT, "normal")
        store = Store(fakeredis.FakeRedis(decode_responses=True))
        intake = ReceiptIntake(store, Jobs(), parking=Parking())
        self.outcomes = Outcomes("up", self.segments, intake)
        self.executor = CountingExecutor(threads)
        self.smsc = Smsc()

    async def begin(self, endpoint: Endpoint, *, stopped: bool) -> asyncio.Task[bool]:
        config = SmppConfig(host="smsc", system_id="smsq")
        self.link = CarrierLink("up", config, "pw", self.segments, self.outcomes, self.executor)
        self.session = Session(endpoint, "transceiver", lambda s, p: None)
        await self.session.open()
        self.batch = self.segments.read(10, 0)
        if stopped:
            self.link.stop()
        preparing = asyncio.create_task(self.link._prepare(self.session, self.batch))
        await until(self.client.begun.is_set)  # the mark is being made, in a thread
        return preparing

    def run(self, scenario: Callable[[Endpoint], Awaitable[None]]) -> None:
        """Run `scenario`; then nothing was written, no mark is left, and the entry is still
        pending for the next connector."""

        async def main(smsc: Smsc, endpoint: Endpoint) -> None:
            with self.executor:
                await scenario(endpoint)
                await self.session.unbind()

        run(main, self.smsc)
        assert self.client.hgetall(keys.smpp_written_key("up")) == {}
        assert self.smsc.counters.submits == 0
        orphans = SegmentQueue(self.client, "up", "next").orphans()
        assert [entry.id for entry in orphans] == [self.batch[0].id]


class TestStopping:
    """A stop never leaves an entry marked written that was not: the next connector would
    take it for sent and fail its segment as an unknown outcome."""

    @pytest.mark.parametrize("cancels", [1, 2], ids=["once", "twice"])
    def test_cancelled_while_marking(self, cancels: int) -> None:
        """The sender is cancelled while its batch's mark is on its way (twice: the bind's
        task, then the sender itself): the mark is taken back once it landed."""
        prep = Preparing()

        async def scenario(endpoint: Endpoint) -> None:
            preparing = await prep.begin(endpoint, stopped=False)
            preparing.cancel()
            for _ in range(cancels - 1):
                for _ in range(3):
                    await asyncio.sleep(0)  # the cancellation before is being handled
                preparing.cancel()
            prep.client.go.set()
            with pytest.raises(asyncio.CancelledError):
                await preparing

        prep.run(scenario)

    def test_stopped_while_marking(self) -> None:
        """The link stops while the mark is on its way: the batch is not written (every
        session is being unbound), its mark taken back, the entry back in line."""
        prep = Preparing()

        async def scenario(endpoint: Endpoint) -> None:
            preparing = await prep.begin(endpoint, stopped=True)
            prep.client.go.set()
            assert await preparing is False
            assert prep.link.ready.take() == prep.batch[0]

        prep.run(scenario)

    def test_cancelled_taking_the_mark_back(self) -> None:
        """Cancelled while taking the mark back, its step still waiting for a free thread:
        the step is carried out all the same."""
        prep = Preparing(threads=1)
        release = threading.Event()

        async def scenario(endpoint: Endpoint) -> None:
            loop = asyncio.get_running_loop()
            preparing = await prep.begin(endpoint, stopped=True)
            busy = loop.run_in_executor(prep.executor, release.wait, 5)  # the one thread
            prep.client.go.set()
            await until(lambda: prep.executor.jobs == 3)  # the mark, busy, taking it back
            preparing.cancel()
            release.set()
            await busy
            with pytest.raises(asyncio.CancelledError):
                await preparing

        prep.run(scenario)
