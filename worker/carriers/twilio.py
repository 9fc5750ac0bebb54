"""Adapter for Twilio's Programmable Messaging API (whole text; Twilio segments it).

Submit: `POST {url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From`
(or `MessagingServiceSid`), `Body`, `StatusCallback`, with HTTP Basic auth (account SID and
auth token: the token also signs the callbacks, so API keys are not supported). 201 answers
`{"sid": "SM…", "status": "queued"}`; errors answer `{"code": 21211, "message": …, "status": 400}`.

Status callbacks: Twilio POSTs form-encoded `MessageSid`, `MessageStatus`, `ErrorCode`, … to the
`StatusCallback` URL, signed: `X-Twilio-Signature` is base64(HMAC-SHA1(auth token, the full URL
+ every POST parameter as name+value, sorted by name)). The URL is the one Twilio called, so
behind a proxy it is rebuilt from `SMSQ_PUBLIC_URL`, the address we gave Twilio.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from worker.carriers.base import (
    Accepted,
    AdapterContext,
    CarrierAdapter,
    CarrierReceipt,
    InboundRequest,
    Probe,
    ReceiptAuth,
    SegmentSubmission,
    SignatureCheck,
)
from worker.carriers.options import Credentials, HttpEndpoint
from worker.carriers.responses import (
    StatusRule,
    accepted_id,
    lookup,
    optional_str,
    probe_http,
    request,
    required_str,
)
from worker.contract import SegmentStatus
from worker.errors import ValidationError

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "x-twilio-signature"

# MessageStatus values (Twilio's MessageEnumStatus) to segment states.
STATUSES: dict[str, SegmentStatus] = {
    "ACCEPTED": SegmentStatus.ACCEPTED,
    "SCHEDULED": SegmentStatus.ACCEPTED,
    "QUEUED": SegmentStatus.ACCEPTED,
    "SENDING": SegmentStatus.ACCEPTED,
    "SENT": SegmentStatus.ACCEPTED,
    "DELIVERED": SegmentStatus.DELIVERED,
    "READ": SegmentStatus.DELIVERED,
    "UNDELIVERED": SegmentStatus.UNDELIVERED,
    "PARTIALLY_DELIVERED": SegmentStatus.UNDELIVERED,
    "FAILED": SegmentStatus.UNDELIVERED,
    "CANCELED": SegmentStatus.UNDELIVERED,
}

# ErrorCode 30036: the ValidityPeriod ran out while the message waited in Twilio's queue.
EXPIRED_ERROR_CODES = frozenset({"30036"})

# Twilio error codes that blame the account or its sender, not the message: another carrier
# may well deliver it (authentication, unknown account, sender not owned / not valid, region
# not enabled, no route from this account).
CARRIER_SIDE_CODES = frozenset(
    {"20003", "20005", "20404", "21212", "21408", "21606", "21612", "21659"}
)


def signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """Twilio's `X-Twilio-Signature` for a request to `url` with POST `params`."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TwilioOptions(HttpEndpoint, Credentials):
    """`[carriers.NAME]` of `type = "twilio"`: the API's `url`, the account SID as `username`,
    the auth token as `password` (or `password_file`), optionally a `messaging_service`."""

    messaging_service: str = ""  # MessagingServiceSid, sent instead of `From`


class TwilioCarrier(CarrierAdapter[TwilioOptions]):
    """Submits whole messages to Twilio's Messages API; validates and parses status callbacks."""

    type_name = "twilio"
    Options = TwilioOptions
    submits_whole_text = True
    receipt_auth = ReceiptAuth.SIGNATURE  # X-Twilio-Signature, keyed by the auth token

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        account_sid: str,
        auth_token: str,
        public_url: str,
        name: str = "twilio",
        messaging_service: str = "",
    ) -> None:
        self.name = name
        self._client = client
        self._url = f"{url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Messages.json"
        self._auth = (account_sid, auth_token)
        self._auth_token = auth_token
        self._public_url = public_url.rstrip("/")
        self._messaging_service = messaging_service

    @classmethod
    def from_config(cls, name: str, options: TwilioOptions, context: AdapterContext) -> Self:
        return cls(
            context.client,
            options.url,
            name=name,
            account_sid=options.username,
            auth_token=options.secret,
            public_url=context.settings.effective_public_url,
            messaging_service=options.messaging_service,
        )

    @classmethod
    def probe(cls, options: TwilioOptions, context: AdapterContext) -> Probe:
        """The account resource, with the account's credentials."""
        url = f"{options.url.rstrip('/')}/{API_VERSION}/Accounts/{options.username}.json"
        return probe_http(context.client, url, auth=(options.username, options.secret))

    @classmethod
    def receipt_signature(
        cls, options: TwilioOptions, *, name: str, public_url: str
    ) -> SignatureCheck:
        """`X-Twilio-Signature` checked with the auth token (read once, here)."""
        auth_token = options.secret

        def check(request: InboundRequest, route: str) -> bool:
            params = dict(request.form) if request.method == "POST" else {}
            return is_signed(
                request, params, auth_token, public_url=public_url, name=name, route=route
            )

        return check

    def submit(self, segment: SegmentSubmission) -> Accepted:
        """POST the whole text; raise a `CarrierError` unless Twilio created the message."""
        form = {"To": segment.to, "Body": segment.full_text}
        if self._messaging_service:
            form["MessagingServiceSid"] = self._messaging_service
        else:
            form["From"] = segment.sender
        if segment.want_receipt:
            form["StatusCallback"] = segment.receipt_url
        response = request(
            self._client,
            "POST",
            self._url,
            carrier=self.name,
            rule=STATUS_RULE,
            data=form,
            auth=self._auth,
        )
        return Accepted(carrier_id=accepted_id(response, "sid", carrier=self.name))

    def parse_receipts(self, request: InboundRequest) -> list[CarrierReceipt]:
        """One receipt from a signed status callback; `ValidationError` if unsigned or garbage."""
        params = dict(request.form) if request.method == "POST" else {}
        if not self.is_signed(request, params):
            raise ValidationError("bad or missing X-Twilio-Signature", field="signature")
        fields = params or dict(request.query)
        status = lookup(STATUSES, required_str(fields, "MessageStatus"), field="MessageStatus")
        error_code = optional_str(fields, "ErrorCode", max_length=16)
        if error_code in EXPIRED_ERROR_CODES:
            status = SegmentStatus.EXPIRED
        return [
            CarrierReceipt(
                carrier_id=required_str(fields, "MessageSid", max_length=64),
                status=status,
                error_code=error_code if error_code and error_code != "0" else None,
                done_at=optional_str(fields, "RawDlrDoneDate", max_length=16),
            )
        ]

    def is_signed(self, request: InboundRequest, params: Mapping[str, str]) -> bool:
        """True when the signature matches the public URL (or the URL as received)."""
        return is_signed(
            request, params, self._auth_token, public_url=self._public_url, name=self.name
        )


def is_signed(
    request: InboundRequest,
    params: Mapping[str, str],
    auth_token: str,
    *,
    public_url: str,
    name: str,
    route: str = "dlr",
) -> bool:
    """Whether `X-Twilio-Signature` matches the URL Twilio was given (under `public_url`:
    `/carriers/{name}/{route}`, `dlr` for status callbacks, `mo` for inbound messages) or the
    URL as received (each with and without the default port), in constant time."""
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not given or not auth_token:
        return False
    for url in _candidate_urls(request.url, public_url.rstrip("/"), name, route):
        expected = signature(url, params, auth_token)
        if hmac.compare_digest(expected.encode(), given.encode()):
            return True
    return False


def _candidate_urls(received: str, public_url: str, name: str, route: str) -> list[str]:
    """The URL Twilio signed: ours from SMSQ_PUBLIC_URL, as received, each ± default port."""
    query = urlsplit(received).query
    public = f"{public_url}/carriers/{name}/{route}" + (f"?{query}" if query else "")
    urls: list[str] = []
    for url in (public, received):
        for variant in (url, _toggle_default_port(url)):
            if variant not in urls:
                urls.append(variant)
    return urls


def _toggle_default_port(url: str) -> str:
    """`https://h/x` ↔ `https://h:443/x` (Twilio signs with or without it, by client)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if default is None or parts.hostname is None:
        return url
    if parts.port == default:
        netloc = parts.netloc.rsplit(":", 1)[0]
    elif parts.port is None:
        netloc = f"{parts.netloc}:{default}"
    else:
        return url
    return urlunsplit(parts._replace(netloc=netloc))


def _error(response: httpx.Response) -> tuple[str, str]:
    """Twilio's error `code` (as a string) and `message`, or defaults by status."""
    code, message = f"http_{response.status_code}", f"Twilio answered {response.status_code}"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return code, message
    if isinstance(body, dict):
        if isinstance(body.get("code"), int | str) and str(body["code"]):
            code = str(body["code"])[:16]
        if isinstance(body.get("message"), str) and body["message"]:
            message = body["message"][:200]
    return code, message


# The shared rule, with Twilio's error body and the codes that blame the account.
STATUS_RULE = StatusRule(details=_error, carrier_side_codes=CARRIER_SIDE_CODES)
