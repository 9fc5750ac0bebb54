"""Each carrier adapter's test data, for tests/unit/test_carrier_conformance.py.

A `CarrierCase` is an adapter's `[carriers.NAME]` table, a stand-in for its carrier that answers
as an `Outcome` says, and the receipt requests its carrier makes. `HttpStandIn` is the stand-in
for carriers smsq speaks HTTP to: a case says only how its carrier answers (`accept`, `refuse`)
and what its receipts look like. Adding an adapter adds its case to `CASES`.
"""

from __future__ import annotations

import json
import socket
from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar, Protocol, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import fakeredis
import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.carriers.base import AdapterContext, InboundRequest, SegmentSubmission
from worker.carriers.twilio import signature as twilio_signature
from worker.receipts.tokens import segment_receipt_url
from worker.settings import Settings
from worker.smpp import queue
from worker.store import keys
from worker.webhooks import generate_secret

NAME = "c1"  # the configured carrier's name in every check
PUBLIC = "http://api.test"
SERVER_KEY = "conformance-server-key"
RECEIPT_SECRET = generate_secret()
TO = "+4915112345678"


class Outcome(Enum):
    """How a stand-in carrier answers every request."""

    ACCEPTED = "accepted"  # takes the submission (and is up, for a probe)
    DOWN = "down"  # a server error
    THROTTLED = "throttled"  # too many requests, come back in 7 s
    UNREACHABLE = "unreachable"  # no connection
    CONNECT_TIMEOUT = "connect_timeout"  # no connection in time: nothing was sent
    NO_ANSWER = "no_answer"  # the request left, no answer came
    BAD_NUMBER = "bad_number"  # refuses the message
    BAD_CREDENTIALS = "bad_credentials"  # refuses the account


def settings() -> Settings:
    return Settings(public_url=PUBLIC, secret_key=SERVER_KEY)


def receipt_url() -> str:
    """The tokenised receipt URL of segment `m1:1`, as the Sender makes it."""
    return segment_receipt_url(f"{PUBLIC}/carriers/{NAME}/dlr", "m1", 1, settings())


def segment() -> SegmentSubmission:
    return SegmentSubmission(
        message_id="m1", seq=1, total=1, to=TO, sender="smsq", udh=b"", payload=b"",
        data_coding=0, text="Your code is 123456", full_text="Your code is 123456",
        receipt_url=receipt_url(),
    )  # fmt: skip


class CarrierCase(ABC):
    """One adapter's test data, with a stand-in for its carrier."""

    table: ClassVar[dict[str, Any]]  # a `[carriers.NAME]` table, `type` included
    # Outcomes the stand-in cannot produce at submission (an adapter that hands segments to a
    # process of its own learns the carrier's answer later, as a receipt): those checks skip.
    unstaged: ClassVar[frozenset[Outcome]] = frozenset()

    @abstractmethod
    def context(self, outcome: Outcome) -> AdapterContext:
        """A context whose carrier answers every request as `outcome` says."""

    @abstractmethod
    def sms_sent(self) -> int:
        """How many submissions (to `TO`) the stand-in saw."""

    @abstractmethod
    def receipt_url_given(self) -> str | None:
        """Where the last submission told the carrier to send its receipts; None when its
        receipts do not come over HTTP (then the receipt checks skip)."""

    @abstractmethod
    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        """The request the carrier makes to `url` (as it was given) reporting `carrier_id`
        delivered."""

    @abstractmethod
    def garbage(self, url: str) -> list[InboundRequest]:
        """Requests to `url` that carry no valid receipt."""

    @abstractmethod
    def close(self) -> None:
        """Release what the stand-in holds."""


def request_to(
    url: str, *, method: str = "POST", body: bytes = b"", headers: dict[str, str] | None = None
) -> InboundRequest:
    """An inbound request as the API receives it (form bodies parsed)."""
    headers = headers or {}
    form = {}
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    return InboundRequest(method, url, query, headers, body, form)


def json_to(url: str, item: object) -> InboundRequest:
    return request_to(
        url, body=json.dumps(item).encode(), headers={"content-type": "application/json"}
    )


def form_to(
    url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> InboundRequest:
    content_type = {"content-type": "application/x-www-form-urlencoded"}
    return request_to(
        url, body=urlencode(form).encode(), headers={**content_type, **(headers or {})}
    )


class HttpStandIn(CarrierCase):
    """A carrier over HTTP: a MockTransport answers as the outcome says, in the carrier's
    own shapes (`accept`, `refuse`)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._clients: list[httpx.Client] = []

    @abstractmethod
    def accept(self, request: httpx.Request) -> httpx.Response:
        """The carrier's answer taking a submission (a probe gets the same)."""

    def refuse(self, outcome: Outcome) -> httpx.Response:
        """The carrier's answer refusing the message (BAD_NUMBER) or the account."""
        status = 400 if outcome is Outcome.BAD_NUMBER else 401
        return httpx.Response(status, json={"error": {"code": outcome.value, "message": "no"}})

    def answer(self, outcome: Outcome, request: httpx.Request) -> httpx.Response:
        if outcome is Outcome.ACCEPTED:
            return self.accept(request)
        if outcome is Outcome.DOWN:
            return httpx.Response(503, text="down")
        if outcome is Outcome.THROTTLED:
            return httpx.Response(429, headers={"retry-after": "7"}, text="slow down")
        if outcome is Outcome.UNREACHABLE:
            raise httpx.ConnectError("refused", request=request)
        if outcome is Outcome.CONNECT_TIMEOUT:
            raise httpx.ConnectTimeout("slow", request=request)
        if outcome is Outcome.NO_ANSWER:
            raise httpx.ReadTimeout("no answer", request=request)
        return self.refuse(outcome)

    def context(self, outcome: Outcome) -> AdapterContext:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return self.answer(outcome, request)

        client = httpx.Client(transport=httpx.MockTransport(handle))
        self._clients.append(client)
        return AdapterContext(client=client, settings=settings())

    def sms_sent(self) -> int:
        number = TO.lstrip("+")
        return sum(number in str(r.url) or number.encode() in r.content for r in self.requests)

    def last_submission(self) -> httpx.Request:
        return next(
            r for r in reversed(self.requests) if TO.lstrip("+") in str(r.url) + str(r.content)
        )

    def close(self) -> None:
        for client in self._clients:
            client.close()


class SimCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "sim", "url": "http://sim.test:8025", "receipt_secret": RECEIPT_SECRET
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"carrier_id": "sim-1"})

    def receipt_url_given(self) -> str:
        return str(json.loads(self.last_submission().content)["receipt_url"])

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return json_to(url, {"carrier_id": carrier_id, "status": "DELIVRD", "err": "000"})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            json_to(url, {}),
            json_to(url, {"carrier_id": "sim-1", "status": "LOST"}),
            request_to(url, body=b"{not json"),
        ]


class HttpCarrierCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "http", "url": "http://upstream.test", "password": "sk_1",
        "receipt_secret": RECEIPT_SECRET,
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"id": "up-1", "status": "queued"})

    def receipt_url_given(self) -> str:
        return str(json.loads(self.last_submission().content)["dlr-url"])

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return json_to(url, {"id": carrier_id, "status": "delivered", "level": 2})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            json_to(url, {"id": "up-1"}),
            json_to(url, {"id": "up-1", "status": "queued"}),
            json_to(url, []),
        ]


class KannelCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "kannel", "url": "http://kannel.test:13013", "username": "smsq", "password": "pw"
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, text="0: Accepted for delivery")

    def refuse(self, outcome: Outcome) -> httpx.Response:
        if outcome is Outcome.BAD_NUMBER:
            return httpx.Response(400, text="Missing receiver number")
        return httpx.Response(403, text="Authorization failed for sendsms")

    def receipt_url_given(self) -> str:
        return dict(parse_qsl(self.last_submission().url.query.decode()))["dlr-url"]

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        # Kannel fills in the escape codes of the `dlr-url` and GETs it.
        answer = quote("id:f1 sub:001 dlvrd:001 stat:DELIVRD err:000", safe="")
        escapes = {"%d": "1", "%T": "1700000000", "%i": "fake", "%F": "f1", "%A": answer}
        for code, value in escapes.items():
            url = url.replace(code, value)
        return request_to(url, method="GET")

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            request_to(url.replace("type=%d", "type=abc"), method="GET"),
            request_to(url.replace("type=%d", "type=0"), method="GET"),
            request_to(f"{PUBLIC}/carriers/{NAME}/dlr?type=1", method="GET"),
        ]


class TwilioCase(HttpStandIn):
    table: ClassVar[dict[str, Any]] = {
        "type": "twilio", "url": "https://api.twilio.test", "username": "AC1", "password": "tok"
    }  # fmt: skip

    def accept(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"sid": "SM1", "status": "queued"})

    def refuse(self, outcome: Outcome) -> httpx.Response:
        if outcome is Outcome.BAD_NUMBER:
            return httpx.Response(400, json={"code": 21211, "message": "Invalid 'To'"})
        return httpx.Response(401, json={"code": 20003, "message": "Authenticate"})

    def receipt_url_given(self) -> str:
        return dict(parse_qsl(self.last_submission().content.decode()))["StatusCallback"]

    def signed(self, url: str, form: dict[str, str]) -> InboundRequest:
        return form_to(url, form, {"x-twilio-signature": twilio_signature(url, form, "tok")})

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        return self.signed(url, {"MessageSid": carrier_id, "MessageStatus": "delivered"})

    def garbage(self, url: str) -> list[InboundRequest]:
        return [
            self.signed(url, {"MessageSid": "SM1", "MessageStatus": "lost"}),
            self.signed(url, {"MessageStatus": "delivered"}),
            form_to(url, {"MessageSid": "SM1", "MessageStatus": "delivered"}),  # unsigned
        ]


Entries = list[tuple[bytes, dict[bytes, bytes]]]  # a stream's, read without decoding


class Closable(Protocol):
    def close(self) -> None: ...


def reserved_port() -> socket.socket:
    """A loopback port held for the whole run, bound but not listening (connections to it are
    refused), which a stand-in may listen on beside it (SO_REUSEPORT)."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


_SMSC_PORT = reserved_port()


class SmppCase(CarrierCase):
    """An SMPP carrier: submitting is the hand-over to the connector (`worker.smpp.queue`), so
    at submission the stand-in is that Redis: a fake one that takes the entry, a refused port
    (unreachable), a silent one (no answer). The SMSC's answers come later, over the binds, as
    receipts; the probe only connects to the SMSC's port (something listens there, or not)."""

    table: ClassVar[dict[str, Any]] = {
        "type": "smpp", "host": "127.0.0.1", "port": _SMSC_PORT.getsockname()[1],
        "system_id": "smsq", "password": "pw",
    }  # fmt: skip
    unstaged = frozenset(
        {
            Outcome.DOWN, Outcome.THROTTLED, Outcome.CONNECT_TIMEOUT, Outcome.BAD_NUMBER,
            Outcome.BAD_CREDENTIALS,
        }
    )  # fmt: skip

    def __init__(self) -> None:
        self.queued = fakeredis.FakeRedis()
        self._held: list[Closable] = [self.queued]

    def context(self, outcome: Outcome) -> AdapterContext:
        client = httpx.Client()
        self._held.append(client)
        if outcome is Outcome.ACCEPTED:
            smsc = socket.socket()
            self._held.append(smsc)
            smsc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            smsc.bind(("127.0.0.1", self.table["port"]))
            smsc.listen()
            return AdapterContext(client=client, settings=settings(), redis=self.queued)
        port = self.table["port"]  # refused: nothing listens there now
        if outcome is Outcome.NO_ANSWER:  # takes the connection (the kernel's backlog), silent
            silent = socket.create_server(("127.0.0.1", 0))
            self._held.append(silent)
            port = silent.getsockname()[1]
        hand_over = redis.Redis(
            port=port, socket_connect_timeout=1, socket_timeout=0.2,
            retry=Retry(NoBackoff(), 0), driver_info=None,
        )  # fmt: skip
        self._held.append(hand_over)
        return AdapterContext(client=client, settings=settings(), redis=hand_over)

    def sms_sent(self) -> int:
        number = TO.lstrip("+").encode()
        streams = [keys.smpp_stream_key(NAME, lane) for lane in queue.LANES]
        entries = [cast(Entries, self.queued.xrange(stream)) for stream in streams]
        return sum(number in fields[b"pdu"] for found in entries for _, fields in found)

    def receipt_url_given(self) -> None:
        return None

    def receipt(self, url: str, carrier_id: str) -> InboundRequest:
        raise AssertionError("an SMPP carrier's receipts come over its binds")

    def garbage(self, url: str) -> list[InboundRequest]:
        raise AssertionError("an SMPP carrier's receipts come over its binds")

    def close(self) -> None:
        for thing in self._held:
            thing.close()


# Every registered adapter's test data, by type name.
CASES: dict[str, type[CarrierCase]] = {
    "sim": SimCase,
    "http": HttpCarrierCase,
    "kannel": KannelCase,
    "twilio": TwilioCase,
    "smpp": SmppCase,
}
