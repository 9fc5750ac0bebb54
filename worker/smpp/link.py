"""One SMPP carrier's binds and the work between its Redis Stream and them (`CarrierLink`).

- **Binds**: `binds` sessions (a transceiver each, or a transmitter and a receiver), each kept
  open: a lost or refused one is bound again after 1 s, doubling to 30 s (30 s at once after
  a refused password or system id).
- **Feeding**: entries are read from the stream (`worker.smpp.queue`) only while the bound
  transmitters have room: at most four windows' worth per session in the connector's hands.
- **Sending**: each transmitter keeps at most `window` submit_sm unanswered; every PDU takes
  a slot of the carrier's `rate` (PDUs per second, all binds together, bursts of `burst`).
  An entry is marked `written` just before its submit_sm goes out.
- **Answers** (`worker.smpp.statuses`): accepted or rejected are stored (`Outcomes`); a
  throttle pauses that bind for 1 s and the segment goes again (first in line); a transient
  error goes again after 1, 2, 4… s, `MAX_TRIES` times in all, then fails; no answer (the
  session died, or `response_timeout` passed) is an unknown outcome, never resent.
- **Receipts and MO** (deliver_sm, data_sm) are stored, and only then answered.
- **Stale entries** (queued longer than `max_age`, the reconciler's deadline for an SMSC's
  answer) are failed unsent.
- **Orphans**: every couple of seconds the link says it is alive and takes over the entries of
  connectors that are not (`SegmentQueue.orphans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, TypeVar

from worker.clock import now_ms
from worker.contract import Priority, SegmentStatus
from worker.smpp.config import SmppConfig
from worker.smpp.flow import ReadyLine, TokenBucket, Window
from worker.smpp.inbound import (
    NotAReceiptError,
    canonical_id,
    is_receipt,
    mobile_originated,
    parse_receipt,
)
from worker.smpp.outcomes import Answer, Batch, Outcomes
from worker.smpp.pdu import Command, Pdu, PduError, ShortMessage, Status, message_id_of
from worker.smpp.queue import ALIVE_SECONDS, Entry, SegmentQueue
from worker.smpp.session import BindError, Endpoint, Session
from worker.smpp.statuses import AUTH_FAILURES, Verdict, describe, error_code, verdict
from worker.store.mo import new_mo_id

log = logging.getLogger(__name__)
T = TypeVar("T")
OTP = Priority.OTP.value

BACKOFF_FIRST, BACKOFF_CAP = 1.0, 30.0
THROTTLE_PAUSE = 1.0
MAX_TRIES = 6  # submit_sm answered with a transient error: tries in all before failing
READ_BLOCK_MS = 500
READ_MAX = 200
BATCH_WAIT = 0.002  # seconds answers may wait to be stored together
IN_HAND_WINDOWS = 4  # entries a transmitter may have in the connector's hands, in windows
DRAIN_SECONDS = 5.0  # on a clean stop: how long answers to what was sent are awaited


class CarrierLink:
    """Holds one SMPP carrier's binds; `run` until `stop`."""

    def __init__(
        self,
        name: str,
        config: SmppConfig,
        password: str,
        queue: SegmentQueue,
        outcomes: Outcomes,
        executor: Executor,
        *,
        rate: float = 0.0,
        burst: int = 1,
        response_timeout: float = 30.0,
        max_age: float = 3600.0,
    ) -> None:
        self.name = name
        self.config = config
        self.endpoint = Endpoint(
            config.host, config.port, config.system_id, password, config.system_type
        )
        self.queue = queue
        self.outcomes = outcomes
        self.executor = executor
        self.bucket = TokenBucket(rate, burst)
        self.response_timeout = response_timeout
        self.max_age = max_age  # seconds an entry may wait to be sent
        self.sessions: list[Session] = []
        self.ready = ReadyLine()
        self.in_hand = 0  # entries read and not yet done
        self._tries: dict[str, int] = {}
        self._paused: dict[Session, float] = {}
        self._room = asyncio.Event()  # a session bound, or entries were done
        self._batch = Batch()
        self._after: list[Callable[[], None]] = []  # run once the batch is stored
        self._stored = asyncio.Event()
        self._storing = False
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # -- running ------------------------------------------------------------------------
    async def run(self) -> None:
        await self._call(self.queue.create_group)
        modes = ["transmitter", "receiver"] if self.config.transmits_alone else ["transceiver"]
        binds = [self._keep(mode, i) for i in range(self.config.binds) for mode in modes]
        self._tasks = [asyncio.create_task(job) for job in [*binds, self._feed(), self._reclaim()]]
        recorder = asyncio.create_task(self._record())
        await self._stopping.wait()
        await self._wind_down()
        recorder.cancel()

    def stop(self) -> None:
        self._stopping.set()

    async def _wind_down(self) -> None:
        """Stop reading; wait briefly for answers to what was written; unbind; store what
        came; leave (what was read and not written is taken over as never sent)."""
        feed, reclaim = self._tasks[-2:]
        feed.cancel()
        reclaim.cancel()
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(s.in_flight for s in self.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(s.unbind() for s in list(self.sessions)))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self.idle and time.monotonic() < deadline + DRAIN_SECONDS:
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await self._call(self.queue.leave)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking Redis step, in the connector's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def _finish(self, fn: Callable[..., T], *args: Any) -> T:
        """`_call`, carried to its end even when the caller is cancelled meanwhile (a stop
        cancels the senders), then the cancellation goes on: a `written` mark is never left
        to chance (one queued in the threads and cancelled would never be made or taken back,
        and a connector taking the entry over would fail it as sent without an answer)."""
        step = asyncio.ensure_future(self._call(fn, *args))
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            while not step.done():  # a stop may cancel twice (the bind's task, then its sender)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([step])
            raise

    # -- binds ----------------------------------------------------------------------------
    async def _keep(self, mode: str, index: int) -> None:
        """Keep one session bound: bind, serve until it ends, wait, bind again."""
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            session = Session(
                self.endpoint,
                mode,
                self._deliver,
                enquire_link=self.config.enquire_link,
                response_timeout=self.response_timeout,
            )
            try:
                await session.open()
            except Exception as exc:  # noqa: BLE001 - whatever failed, this bind is tried again
                session.close()
                if isinstance(exc, BindError) and exc.status in AUTH_FAILURES:
                    backoff = BACKOFF_CAP
                log.warning(
                    "smpp bind failed",
                    extra={"carrier": self.name, "bind": index, "mode": mode, "error": str(exc),
                           "retry_in": backoff},
                )  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_CAP, backoff * 2)
                continue
            backoff = BACKOFF_FIRST
            log.info("smpp bound", extra={"carrier": self.name, "bind": index, "mode": mode})
            self.sessions.append(session)
            self._room.set()
            sender = asyncio.create_task(self._send(session)) if session.transmits else None
            try:
                await session.closed
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                self.sessions.remove(session)
                self._paused.pop(session, None)
                session.close()
            log.warning("smpp session ended", extra={"carrier": self.name, "bind": index})

    # -- feeding and sending ----------------------------------------------------------------
    async def _feed(self) -> None:
        """Read entries while the bound transmitters have room for them."""
        while True:
            senders = sum(1 for s in self.sessions if s.transmits and s.is_open)
            room = senders * self.config.window * IN_HAND_WINDOWS - self.in_hand
            if room <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 0.5)
                continue
            try:
                entries = await self._call(self.queue.read, min(room, READ_MAX), READ_BLOCK_MS)
            except Exception:
                log.exception("smpp: reading the queue failed", extra={"carrier": self.name})
                await asyncio.sleep(1.0)
                continue
            self.in_hand += len(entries)
            self.ready.put_front([e for e in entries if e.lane == OTP])  # before a backlog
            self.ready.extend([e for e in entries if e.lane != OTP])

    async def _send(self, session: Session) -> None:
        """Write submit_sm on one session while it is open, `window` unanswered at most."""
        window = Window(self.config.window)
        while session.is_open:
            await self.ready.wait()
            await window.acquire()
            if self._stopping.is_set():
                return  # winding down: what is not written stays for the next connector
            batch = self._take_batch(window)
            if not batch:
                window.release()
                continue
            written = False
            try:
                if await self._prepare(session, batch):
                    for entry in batch:
                        answer = session.request(Command.SUBMIT_SM, entry.pdu)
                        answer.add_done_callback(
                            functools.partial(self._answered, session, window, entry)
                        )
                    written = True
                    await session.drain()
                else:
                    window.release(len(batch))
            except asyncio.CancelledError:
                if not written:
                    self.ready.put_front(batch)  # someone else sends them
                raise

    def _take_batch(self, window: Window) -> list[Entry]:
        """Entries to write now: one (its window slot taken), and more while the window has
        room and the rate a free slot."""
        entry = self._next()
        if entry is None:
            return []
        batch = [entry]
        while len(self.ready) and window.free > 0:
            if self.bucket.reserve(only_now=True) is None:
                break
            taken = self._next()
            if taken is None:
                break
            window.take()
            batch.append(taken)
        return batch

    def _next(self) -> Entry | None:
        """The next entry still worth sending. One queued longer than `max_age` is failed
        unsent: by then the reconciler gives its segment up (no SMSC answer within its
        deadline), and the client was told; sending it now would contradict that."""
        while (entry := self.ready.take()) is not None:
            if time.time() * 1000 - entry.queued_at <= self.max_age * 1000:
                return entry
            self._store(
                Answer(
                    entry, SegmentStatus.FAILED, error_code="not_sent",
                    error_message=f"waited over {self.max_age:g} s for a bind; not sent",
                )
            )  # fmt: skip
        return None

    async def _prepare(self, session: Session, batch: list[Entry]) -> bool:
        """Wait out a throttle pause and the rate; mark the batch written. False (the batch
        back in line, unmarked) when the session ended or the link began to stop meanwhile:
        a stop unbinds every session, and nothing is written after that."""
        pause = self._paused.get(session, 0.0) - time.monotonic()
        wait = self.bucket.reserve() or 0.0
        if max(pause, wait) > 0:
            await asyncio.sleep(max(pause, wait))
        try:
            await self._finish(self.queue.mark_written, batch)
            if session.is_open and not self._stopping.is_set():
                return True
        except asyncio.CancelledError:  # a stop: nothing was written, the mark goes
            await self._finish(self.queue.unmark_written, batch)
            raise
        await self._finish(self.queue.unmark_written, batch)
        self.ready.put_front(batch)
        return False

    # -- answers ----------------------------------------------------------------------------
    def _answered(
        self, session: Session, window: Window, entry: Entry, answer: asyncio.Future[Pdu]
    ) -> None:
        window.release()
        if answer.cancelled() or answer.exception() is not None:
            reason = "cancelled" if answer.cancelled() else str(answer.exception())
            self._store(
                Answer(
                    entry, SegmentStatus.UNKNOWN, error_code="unknown_outcome",
                    error_message=f"submit_sm written, no submit_sm_resp ({reason})",
                )
            )  # fmt: skip
            return
        pdu = answer.result()
        decided = verdict(pdu.status, nack=pdu.command == Command.GENERIC_NACK)
        if decided is Verdict.ACCEPTED:
            raw = message_id_of(pdu.body)
            smsc_id = canonical_id(raw, self.config.id_bases[0]) if raw.strip() else ""
            self._store(Answer(entry, SegmentStatus.ACCEPTED, smsc_id=smsc_id))
        elif decided is Verdict.REJECTED:
            self._store(
                Answer(
                    entry, SegmentStatus.REJECTED, error_code=error_code(pdu.status),
                    error_message=describe(pdu.status),
                )
            )  # fmt: skip
        elif decided is Verdict.THROTTLED:
            self._paused[session] = time.monotonic() + THROTTLE_PAUSE
            self._later(self._again(entry, THROTTLE_PAUSE))
        else:
            tries = self._tries[entry.id] = self._tries.get(entry.id, 0) + 1
            if tries >= MAX_TRIES:
                message = f"{describe(pdu.status)}, {tries} tries"
                code = error_code(pdu.status)
                self._store(
                    Answer(entry, SegmentStatus.FAILED, error_code=code, error_message=message)
                )
            else:
                self._later(self._again(entry, min(BACKOFF_CAP, 2.0 ** (tries - 1))))

    def _later(self, job: Coroutine[Any, Any, None]) -> None:
        """Run `job` in the background, holding a reference until it is done."""
        task = asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _again(self, entry: Entry, delay: float) -> None:
        """Send an entry again after `delay`: first unmarked (its submit_sm was answered, so a
        connector dying now leaves it to be sent, not unknown), then first in line."""
        await self._finish(self.queue.unmark_written, [entry])
        await asyncio.sleep(delay)
        self.ready.put_front([entry])

    def _store(self, answer: Answer) -> None:
        self._batch.answers.append(answer)
        self._stored.set()

    # -- receipts and MO ------------------------------------------------------------------------
    def _deliver(self, session: Session, pdu: Pdu) -> None:
        """A deliver_sm / data_sm: stored first, answered after (`_record`)."""
        reply = b"\0"  # deliver_sm_resp / data_sm_resp: an empty message_id
        try:
            if pdu.command == Command.DELIVER_SM:
                message = ShortMessage.decode(pdu.body)
            else:
                message = ShortMessage.decode_data_sm(pdu.body)
        except PduError:
            session.respond(pdu, Status.RINVMSGLEN)
            return
        try:
            if is_receipt(message):
                self._batch.receipts.append(parse_receipt(message, self.config.id_bases[1]))
            else:
                at = now_ms()
                mo = replace(mobile_originated(message), received_at=at, mo_id=new_mo_id(at))
                self._batch.messages.append(mo)
        except (NotAReceiptError, ValueError) as exc:
            log.warning(
                "smpp: unreadable deliver_sm", extra={"carrier": self.name, "error": str(exc)}
            )
            session.respond(pdu, Status.ROK, reply)  # answered: it would come back forever
            return
        self._after.append(functools.partial(session.respond, pdu, Status.ROK, reply))
        self._stored.set()

    async def _record(self) -> None:
        """Store what came in, in batches; then acknowledge and answer it."""
        backoff = BACKOFF_FIRST
        while True:
            await self._stored.wait()
            await asyncio.sleep(BATCH_WAIT)  # let the answers arriving together join
            self._stored.clear()
            batch, after = self._batch, self._after
            self._batch, self._after = Batch(), []
            if not (batch.answers or batch.receipts or batch.messages):
                continue
            self._storing = True
            try:
                await self._call(self.outcomes.store, batch)
            except Exception:
                log.exception("smpp: storing answers failed", extra={"carrier": self.name})
                self._batch, self._after = batch.joined(self._batch), after + self._after
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_CAP, backoff * 2)
                self._stored.set()
                continue
            finally:
                self._storing = False
            backoff = BACKOFF_FIRST
            for answer in batch.answers:
                self._tries.pop(answer.entry.id, None)
            self.in_hand -= len(batch.answers)
            self._room.set()
            for respond in after:
                respond()

    @property
    def idle(self) -> bool:
        """Nothing waits to be stored, nothing is being stored."""
        waiting = self._batch.answers or self._batch.receipts or self._batch.messages
        return not (waiting or self._storing)

    # -- orphans ------------------------------------------------------------------------------
    async def _reclaim(self) -> None:
        """Say this connector is alive; take over the entries of connectors that are not."""
        while True:
            try:
                await self._call(self.queue.heartbeat)
                orphans = await self._call(self.queue.orphans)
            except Exception:
                log.exception("smpp: heartbeat / takeover failed", extra={"carrier": self.name})
                orphans = []
            if orphans:
                log.warning(
                    "smpp: took over a stopped connector's segments",
                    extra={"carrier": self.name, "segments": len(orphans),
                           "written": sum(e.written for e in orphans)},
                )  # fmt: skip
            self.in_hand += len(orphans)
            self.ready.extend([e for e in orphans if not e.written])
            for entry in (e for e in orphans if e.written):
                self._store(
                    Answer(
                        entry, SegmentStatus.UNKNOWN, error_code="unknown_outcome",
                        error_message="submit_sm written by a connector that stopped, no answer",
                    )
                )  # fmt: skip
            await asyncio.sleep(ALIVE_SECONDS / 3)
