"""One SMPP session over asyncio: connect, bind, requests with their responses, enquire_link.

A `Session` pairs each response with its request by sequence number (1..0x7FFFFFFF, then
wrapping), answers the SMSC's enquire_link and unbind, hands every deliver_sm / data_sm to its
owner (`on_deliver`), and checks the link with enquire_link every `enquire_link` seconds: an
unanswered one closes the session. A request not answered within `response_timeout` fails
with `NoResponseError`; when the session ends, every open request fails with
`SessionClosedError`. Either way a submit_sm that was written has an unknown outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.smpp.pdu import RESPONSE, Bind, Command, Pdu, PduError, Status, split

log = logging.getLogger(__name__)

BIND_COMMANDS = {
    "transceiver": Command.BIND_TRANSCEIVER,
    "transmitter": Command.BIND_TRANSMITTER,
    "receiver": Command.BIND_RECEIVER,
}
MAX_SEQUENCE = 0x7FFFFFFF
CONNECT_TIMEOUT = 10.0
READ_SIZE = 65536


class SessionClosedError(ConnectionError):
    """The session ended before the request was answered."""


class NoResponseError(TimeoutError):
    """The SMSC did not answer the request in time."""


class BindError(ConnectionError):
    """The SMSC refused the bind (`status`)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: 0x{status:08X}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to bind."""

    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""


@dataclass(slots=True)
class _Request:
    future: asyncio.Future[Pdu]
    due: float  # monotonic time by which the answer must come


Deliver = Callable[["Session", Pdu], None]


class Session:
    """One bound SMPP session; `open` it, then `request`; `closed` resolves when it ends."""

    def __init__(
        self,
        endpoint: Endpoint,
        mode: str,
        on_deliver: Deliver,
        *,
        enquire_link: float = 30.0,
        response_timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.mode = mode  # transceiver, transmitter or receiver
        self.on_deliver = on_deliver
        self.enquire_link = enquire_link
        self.response_timeout = response_timeout
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, _Request] = {}
        self._sequence = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def transmits(self) -> bool:
        return self.mode != "receiver"

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self.closed.done()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def open(self) -> None:
        """Connect and bind; `BindError`, `OSError` or `TimeoutError` when that fails."""
        ep = self.endpoint
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ep.host, ep.port), CONNECT_TIMEOUT
        )
        self._writer = writer
        self._tasks.append(asyncio.create_task(self._read(reader)))
        bind = Bind(ep.system_id, ep.password, ep.system_type)
        try:
            answer = await self.request(BIND_COMMANDS[self.mode], bind.encode())
        except ConnectionError:
            self.close()
            raise
        if answer.status != Status.ROK:
            self.close()
            raise BindError(answer.status)
        self._tasks.append(asyncio.create_task(self._keep_alive()))

    def request(self, command: int, body: bytes = b"") -> asyncio.Future[Pdu]:
        """Write a request; its future resolves with the response (or a generic_nack)."""
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        if not self.is_open:
            future.set_exception(SessionClosedError("session closed"))
            return future
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        self._pending[self._sequence] = _Request(future, time.monotonic() + self.response_timeout)
        self._write(Pdu(command, 0, self._sequence, body))
        return future

    def respond(self, request: Pdu, status: int = Status.ROK, body: bytes = b"") -> None:
        """Answer a request of the SMSC (deliver_sm_resp and the like)."""
        if self.is_open:
            self._write(request.response(status, body))

    async def drain(self) -> None:
        """Wait while the socket's buffer is full (back-pressure)."""
        if self._writer is not None and not self.closed.done():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def unbind(self, timeout: float = 2.0) -> None:
        """A polite end: unbind, wait briefly for its answer, close."""
        if self.is_open:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.request(Command.UNBIND), timeout)
        self.close()

    def close(self, reason: str = "session closed") -> None:
        """End the session: fail every open request, close the socket."""
        if not self.closed.done():
            self.closed.set_result(None)
        pending, self._pending = self._pending, {}
        for request in pending.values():
            if not request.future.done():
                request.future.set_exception(SessionClosedError(reason))
        if self._writer is not None:
            self._writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _write(self, pdu: Pdu) -> None:
        assert self._writer is not None
        self._writer.write(pdu.encode())

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        reason = "the SMSC closed the connection"
        try:
            while data := await reader.read(READ_SIZE):
                pdus, buffer = split(buffer + data)
                for pdu in pdus:
                    self._dispatch(pdu)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        except PduError as exc:
            reason = f"garbage from the SMSC: {exc}"
        self.close(reason)

    def _dispatch(self, pdu: Pdu) -> None:
        if pdu.command & RESPONSE:
            request = self._pending.pop(pdu.sequence, None)
            if request is None:
                log.warning("smpp: answer to no open request", extra={"command": pdu.command})
            elif not request.future.done():
                request.future.set_result(pdu)
        elif pdu.command in (Command.DELIVER_SM, Command.DATA_SM):
            self.on_deliver(self, pdu)
        elif pdu.command == Command.ENQUIRE_LINK:
            self.respond(pdu)
        elif pdu.command == Command.UNBIND:
            self.respond(pdu)
            self.close("the SMSC unbound")
        else:
            self._write(Pdu(Command.GENERIC_NACK, Status.RINVCMDID, pdu.sequence))

    async def _keep_alive(self) -> None:
        """enquire_link every `enquire_link` seconds; overdue answers fail their requests."""
        tick = min(1.0, self.enquire_link)
        next_link = time.monotonic() + self.enquire_link
        while self.is_open:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for sequence, request in list(self._pending.items()):
                if request.due <= now:
                    del self._pending[sequence]
                    if not request.future.done():
                        request.future.set_exception(NoResponseError("no answer in time"))
            if now >= next_link:
                next_link = now + self.enquire_link
                self.request(Command.ENQUIRE_LINK).add_done_callback(self._link_answered)

    def _link_answered(self, link: asyncio.Future[Pdu]) -> None:
        if not link.cancelled() and isinstance(link.exception(), NoResponseError):
            self.close("enquire_link unanswered")
