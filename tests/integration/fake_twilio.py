"""A local server that follows Twilio's published Messages API and status-callback formats.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded, HTTP Basic auth with the
account SID and auth token) creates a message: 201 with Twilio's JSON resource (`sid`,
`status: queued`, `num_segments`, …), or Twilio's error JSON (`code`, `message`, `more_info`,
`status`): 401/20003 for bad credentials, 400/21211 for a bad `To`, 400/21604 without `Body`,
400/21603 without `From`. If `StatusCallback` was given, it then POSTs form-encoded callbacks
(`sent`, then `delivered`) signed with `X-Twilio-Signature`, as Twilio does.
`GET /2010-04-01/Accounts/{AccountSid}.json` answers the account resource (health probes).
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from worker.carriers.twilio import signature
from worker.encoding import encode_message

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "f" * 32


def _error(status: int, code: int, message: str) -> JSONResponse:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}  # fmt: skip
    return JSONResponse(body, status)


@dataclass
class FakeTwilio:
    """The server's state: messages created, callbacks sent; `down` answers 503."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    callback_delay: float = 0.05
    # Cleared: status callbacks wait until it is set again (a test holds them back meanwhile).
    callbacks_open: threading.Event = field(default_factory=threading.Event)
    down: bool = False
    refused_numbers: set[str] = field(default_factory=set)  # answered 400 / 21211
    messages: list[dict[str, Any]] = field(default_factory=list)
    callbacks_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.callbacks_open.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def app(self) -> Starlette:
        client: dict[str, httpx.AsyncClient] = {}

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            client["http"] = httpx.AsyncClient(timeout=5)
            try:
                yield
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await client["http"].aclose()

        async def create(request: Request) -> JSONResponse:
            # Form-encoded, parsed by hand (Starlette's form parser needs python-multipart).
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            answer = self._check(request, form)
            if isinstance(answer, JSONResponse):
                return answer
            callback = answer.get("StatusCallback")
            if callback:
                task = asyncio.create_task(self._callbacks(client["http"], callback, answer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return JSONResponse(answer["resource"], 201)

        async def account(request: Request) -> JSONResponse:
            if not self._authorised(request):
                return _error(401, 20003, "Authenticate")
            return JSONResponse({"sid": self.account_sid, "status": "active", "type": "Full"})

        base = "/2010-04-01/Accounts/{sid}"
        routes = [
            Route(base + "/Messages.json", create, methods=["POST"]),
            Route(base + ".json", account, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return bool(
            request.headers.get("authorization") == f"Basic {expected}"
            and request.path_params["sid"] == self.account_sid
        )

    def _check(self, request: Request, form: dict[str, str]) -> dict[str, Any] | JSONResponse:
        if self.down:
            return _error(503, 20503, "Service Unavailable")
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        if not form.get("Body"):
            return _error(400, 21604, "A 'Body' parameter is required to send a message.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' phone number is required.")
        to = form.get("To", "")
        if not re.fullmatch(r"\+[1-9][0-9]{6,14}", to) or to in self.refused_numbers:
            return _error(
                400, 21211, f"The 'To' number {form.get('To')} is not a valid phone number."
            )
        sid = "SM" + uuid.uuid4().hex
        resource = {
            "sid": sid, "account_sid": self.account_sid, "to": form["To"],
            "from": form.get("From"), "body": form["Body"], "status": "queued",
            "num_segments": str(len(encode_message(form["Body"], "auto").segments)),
            "direction": "outbound-api", "api_version": "2010-04-01", "error_code": None,
            "date_created": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }  # fmt: skip
        with self.lock:
            self.messages.append(resource)
        return {"resource": resource, **form}

    async def _callbacks(self, http: httpx.AsyncClient, url: str, sent: dict[str, Any]) -> None:
        resource = sent["resource"]
        for status in ("sent", "delivered"):
            await asyncio.sleep(self.callback_delay)
            while not self.callbacks_open.is_set():
                await asyncio.sleep(0.02)
            params = {
                "AccountSid": self.account_sid, "ApiVersion": "2010-04-01",
                "From": resource["from"] or "", "To": resource["to"],
                "MessageSid": resource["sid"], "SmsSid": resource["sid"],
                "MessageStatus": status, "SmsStatus": status,
            }  # fmt: skip
            headers = {"x-twilio-signature": signature(url, params, self.auth_token)}
            try:
                await http.post(url, data=params, headers=headers)
            except httpx.HTTPError:
                continue
            with self.lock:
                self.callbacks_sent += 1
