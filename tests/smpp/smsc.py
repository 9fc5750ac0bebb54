"""An SMPP 3.4 SMSC stand-in for tests: binds, takes submit_sm, sends receipts as scripted.

    with running_smsc(by_last_digit({"1": Outcome(submit_status=Status.RSUBMITFAIL),
                                     "3": Outcome(stat="EXPIRED")})) as smsc:
        ...  # point an ESME (Kannel's `smsc = smpp`, an smsq connector) at 127.0.0.1:smsc.port
        smsc.counters.submits, smsc.submitted[-1].destination_addr

It answers `bind_transmitter` / `bind_receiver` / `bind_transceiver` (any system id, or the
one password it was given), `enquire_link` and `unbind`; a `submit_sm` gets a
`submit_sm_resp` with the scripted `command_status` and, when accepted, a message id (decimal,
from 1); then, if the submit asked for one (`registered_delivery`), a receipt `deliver_sm`
(esm_class 0x04) on a session bound to receive: the SMPP text `id:… sub:001 dlvrd:… submit
date:… done date:… stat:… err:… text:…` with the `receipted_message_id` and `message_state`
TLVs. Its `deliver_sm_resp` is counted. Unknown commands get a `generic_nack`.

Scriptable beyond that, for an ESME's tests: a slow `submit_sm_resp` (`Outcome.resp_delay`),
the receipt before the `submit_sm_resp` (`receipt_first`), receipts as `data_sm`, ids in
hex or decimal (`Smsc(id_base=…, receipt_id_base=…)`), throttling (`max_per_second`, or
`throttle(n)`: the next n submits get ESME_RTHROTTLED), an unbind or a dropped connection on
demand (`unbind_all`, `drop_all`), and MO messages (`deliver_mo`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace

from worker.smpp.pdu import (
    RESPONSE,
    STATES,
    Bind,
    Command,
    MessageState,
    Pdu,
    PduError,
    ShortMessage,
    Status,
    Tag,
    cstring,
    split,
)

RECEIVES = {Command.BIND_RECEIVER, Command.BIND_TRANSCEIVER}
TRANSMITS = {Command.BIND_TRANSMITTER, Command.BIND_TRANSCEIVER}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the SMSC does with one submit_sm."""

    submit_status: int = Status.ROK  # the submit_sm_resp's command_status
    stat: str = "DELIVRD"  # the receipt's `stat:`; "" sends no receipt
    err: str = "000"  # the receipt's `err:`
    receipt_delay: float = 0.0  # seconds after the submit_sm_resp
    tlvs: bool = True  # receipted_message_id and message_state besides the text
    resp_delay: float = 0.0  # seconds before the submit_sm_resp
    receipt_first: bool = False  # the receipt goes out before the submit_sm_resp
    data_sm: bool = False  # the receipt as data_sm (TLVs and message_payload) not deliver_sm

    @property
    def message_state(self) -> MessageState:
        return STATES.get(self.stat, MessageState.UNKNOWN)


Script = Callable[[str], Outcome]  # the destination number → what happens to its submit_sm


def by_last_digit(table: Mapping[str, Outcome], default: Outcome | None = None) -> Script:
    """A script keyed by the destination's last digit (`default`: delivered)."""
    fallback = default or Outcome()
    return lambda destination: table.get(destination[-1:], fallback)


@dataclass
class Counters:
    """What the SMSC saw and did."""

    binds: int = 0
    unbinds: int = 0
    submits: int = 0  # submit_sm received
    refused: int = 0  # of which answered with a non-zero status
    receipts_sent: int = 0
    receipts_acked: int = 0  # deliver_sm_resp received
    enquire_links: int = 0
    throttled: int = 0  # submit_sm answered ESME_RTHROTTLED (`max_per_second`, `throttle`)
    mo_sent: int = 0


@dataclass(frozen=True, slots=True)
class Submitted:
    """One submit_sm as received, with the id it was given ("" if refused)."""

    message_id: str
    outcome: Outcome
    pdu: ShortMessage


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    bound: int | None = None  # the bind command
    sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # deliver_sm / data_sm sent and not yet answered: sent again on another session if this
    # one ends first (an SMSC keeps receipts until an ESME acknowledges them).
    unacked: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def send(self, pdu: Pdu) -> None:
        if not self.writer.is_closing():
            self.writer.write(pdu.encode())


class Smsc:
    """The SMSC on one asyncio loop; `running_smsc` runs it in a thread for sync tests."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        password: str | None = None,
        id_base: str = "decimal",
        receipt_id_base: str | None = None,
        max_per_second: int = 0,
    ) -> None:
        self.script: Script = script or (lambda destination: Outcome())
        self.password = password
        self.id_base = id_base  # submit_sm_resp ids: "decimal" or "hex" (upper case, padded)
        self.receipt_id_base = receipt_id_base or id_base
        self.max_per_second = max_per_second  # beyond it in one second: ESME_RTHROTTLED
        self.throttle_next = 0
        self._second, self._in_second = 0, 0
        self.counters = Counters()
        self.submitted: list[Submitted] = []
        self._ids = itertools.count(1)
        self._sessions: list[_Session] = []
        self._owed: list[tuple[int, bytes]] = []  # receipts no receiving session took yet
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in self._sessions:
            session.writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions.append(session)
        buffer = b""
        try:
            while data := await reader.read(65536):
                pdus, buffer = split(buffer + data)
                for pdu in pdus:
                    self._handle(session, pdu)
                await writer.drain()
        except (ConnectionError, PduError):
            pass
        finally:
            self._sessions.remove(session)
            self._owed.extend(session.unacked.values())
            session.unacked.clear()
            self._flush()
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, session: _Session, pdu: Pdu) -> None:
        command = pdu.command
        if command in (Command.BIND_RECEIVER, Command.BIND_TRANSMITTER, Command.BIND_TRANSCEIVER):
            session.send(pdu.response(self._bind(session, pdu), cstring("smsq-test-smsc")))
            if session.bound in RECEIVES:
                self._flush()
        elif command == Command.SUBMIT_SM:
            self._submit(session, pdu)
        elif command in (Command.DELIVER_SM | RESPONSE, Command.DATA_SM | RESPONSE):
            if session.unacked.pop(pdu.sequence, None) is not None:
                self.counters.receipts_acked += 1
        elif command == Command.ENQUIRE_LINK:
            self.counters.enquire_links += 1
            session.send(pdu.response())
        elif command == Command.UNBIND:
            self.counters.unbinds += 1
            session.send(pdu.response())
            session.bound = None
        elif not command & RESPONSE:
            session.send(Pdu(Command.GENERIC_NACK, Status.RINVCMDID, pdu.sequence))

    def _bind(self, session: _Session, pdu: Pdu) -> int:
        if session.bound is not None:
            return Status.RALYBND
        try:
            bind = Bind.decode(pdu.body)
        except PduError:
            return Status.RBINDFAIL
        if self.password is not None and bind.password != self.password:
            return Status.RINVPASWD
        session.bound = pdu.command
        self.counters.binds += 1
        return Status.ROK

    def _submit(self, session: _Session, pdu: Pdu) -> None:
        if session.bound not in TRANSMITS:
            session.send(pdu.response(Status.RINVBNDSTS))
            return
        try:
            submit = ShortMessage.decode(pdu.body)
        except PduError:
            session.send(pdu.response(Status.RINVMSGLEN))
            return
        if self._throttled():
            self.counters.throttled += 1
            session.send(pdu.response(Status.RTHROTTLED))
            return
        self.counters.submits += 1
        outcome = self.script(submit.destination_addr)
        if outcome.submit_status != Status.ROK:
            self.counters.refused += 1
            self.submitted.append(Submitted("", outcome, submit))
            self._later(outcome.resp_delay, session.send, pdu.response(outcome.submit_status))
            return
        taken = Submitted(_format_id(next(self._ids), self.id_base), outcome, submit)
        self.submitted.append(taken)
        answer = pdu.response(Status.ROK, cstring(taken.message_id))
        wants = _wants_receipt(submit.registered_delivery, outcome.stat)
        if wants and outcome.receipt_first:
            self._receipt(session, taken, time.time())
            self._later(max(outcome.resp_delay, 0.2), session.send, answer)
            return
        self._later(outcome.resp_delay, session.send, answer)
        if wants:
            delay = outcome.resp_delay + outcome.receipt_delay
            self._later(delay, self._receipt, session, taken, time.time())

    def _later(self, delay: float, action: Callable[..., None], *args: object) -> None:
        if delay <= 0:
            action(*args)
        else:
            asyncio.get_running_loop().call_later(delay, action, *args)

    def _throttled(self) -> bool:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return True
        if not self.max_per_second:
            return False
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        return self._in_second > self.max_per_second

    def _receipt(self, via: _Session, submitted: Submitted, at: float) -> None:
        """Send the receipt on `via` if it receives, else on any session that does."""
        outcome, submit, message_id = submitted.outcome, submitted.pdu, submitted.message_id
        submit_date = time.strftime("%y%m%d%H%M", time.gmtime(at))
        done_date = time.strftime("%y%m%d%H%M", time.gmtime())
        delivered = "001" if outcome.stat == "DELIVRD" else "000"
        preview = submit.text_bytes[:20].decode("latin-1")
        receipt_id = _format_id(_parse_id(message_id, self.id_base), self.receipt_id_base)
        text = (
            f"id:{receipt_id} sub:001 dlvrd:{delivered} submit date:{submit_date} "
            f"done date:{done_date} stat:{outcome.stat} err:{outcome.err} text:{preview}"
        )
        tlvs: dict[int, bytes] = {}
        if outcome.tlvs:
            tlvs = {
                Tag.RECEIPTED_MESSAGE_ID: cstring(receipt_id),
                Tag.MESSAGE_STATE: bytes([outcome.message_state]),
            }
        receipt = ShortMessage(
            source_addr=submit.destination_addr,
            destination_addr=submit.source_addr,
            short_message=text.encode("latin-1"),
            esm_class=0x04,
            source_addr_ton=submit.dest_addr_ton,
            source_addr_npi=submit.dest_addr_npi,
            tlvs=tlvs,
        )
        if outcome.data_sm:
            data = replace(receipt, tlvs={**tlvs, Tag.MESSAGE_PAYLOAD: receipt.short_message})
            self._push(via, Command.DATA_SM, data.encode_data_sm())
        else:
            self._push(via, Command.DELIVER_SM, receipt.encode())
        self.counters.receipts_sent += 1

    def _push(self, via: _Session | None, command: int, body: bytes) -> None:
        """Send a deliver_sm / data_sm on `via` if it receives, else on any session that does,
        else keep it until one binds."""
        receivers = [s for s in self._sessions if s.bound in RECEIVES]
        live = via is not None and via in receivers
        session = via if live else next(iter(receivers), None)
        if session is None:
            self._owed.append((command, body))
            return
        sequence = next(session.sequence)
        session.unacked[sequence] = (command, body)
        session.send(Pdu(command, 0, sequence, body))

    def _flush(self) -> None:
        owed, self._owed = self._owed, []
        for command, body in owed:
            self._push(None, command, body)

    def deliver_mo(self, source: str, destination: str, text: str) -> bool:
        """A message from a handset (`source`, international) to `destination`, GSM text, on a
        session bound to receive; False if there is none."""
        if not any(s.bound in RECEIVES for s in self._sessions):
            return False
        message = ShortMessage(
            source_addr=source.lstrip("+"), destination_addr=destination.lstrip("+"),
            short_message=text.encode("latin-1"), source_addr_ton=1, source_addr_npi=1,
        )  # fmt: skip
        self._push(None, Command.DELIVER_SM, message.encode())
        self.counters.mo_sent += 1
        return True

    def unbind_all(self) -> None:
        """Ask every bound session to unbind (as an SMSC going down for maintenance)."""
        for session in self._sessions:
            if session.bound is not None:
                session.send(Pdu(Command.UNBIND, 0, next(session.sequence)))

    def drop_all(self) -> None:
        """Close every connection at once, answers still owed dropped."""
        for session in list(self._sessions):
            session.writer.transport.abort()


def _format_id(number: int, base: str) -> str:
    return f"{number:08X}" if base == "hex" else str(number)


def _parse_id(text: str, base: str) -> int:
    return int(text, 16 if base == "hex" else 10)


def _wants_receipt(registered_delivery: int, stat: str) -> bool:
    """`registered_delivery` bits 1-0: 1 a receipt always, 2 only for a failure."""
    wanted = registered_delivery & 0x03
    return bool(stat) and (wanted == 1 or (wanted == 2 and stat != "DELIVRD"))


@dataclass
class RunningSmsc:
    """An `Smsc` serving on loopback from its own thread."""

    smsc: Smsc
    port: int

    @property
    def counters(self) -> Counters:
        return self.smsc.counters

    @property
    def submitted(self) -> list[Submitted]:
        return self.smsc.submitted

    loop: asyncio.AbstractEventLoop | None = None

    def call(self, action: Callable[[], object]) -> object:
        """Run `action` on the SMSC's loop and return what it returned."""
        assert self.loop is not None

        async def run() -> object:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def bound_sessions(self) -> int:
        return int(str(self.call(lambda: sum(s.bound is not None for s in self.smsc._sessions))))


@contextmanager
def running_smsc(
    script: Script | None = None,
    *,
    password: str | None = None,
    port: int = 0,
    **options: object,
) -> Iterator[RunningSmsc]:
    """Serve an `Smsc` on 127.0.0.1 (a free port, or `port`) in a thread; stopped on exit."""
    smsc = Smsc(script, password=password, **options)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="smsc", daemon=True)
    thread.start()
    try:
        bound = asyncio.run_coroutine_threadsafe(smsc.start(port=port), loop).result(10)
        yield RunningSmsc(smsc, bound, loop)
    finally:
        with suppress(Exception):
            asyncio.run_coroutine_threadsafe(smsc.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main() -> None:
    """`python -m tests.smpp.smsc PORT [--no-receipts]`: serve until killed (benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.smpp.smsc", description=main.__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--no-receipts", action="store_true")
    args = parser.parse_args()
    outcome = Outcome(stat="" if args.no_receipts else "DELIVRD")

    async def serve() -> None:
        smsc = Smsc(lambda to: outcome)
        await smsc.start(port=args.port)
        await asyncio.Event().wait()

    with suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
