"""Who may report a receipt: per-segment tokens in callback URLs, carrier signatures.

Every receipt URL smsq hands a carrier names one segment and carries its token:

    {SMSQ_PUBLIC_URL}/carriers/{name}/dlr?ref={message_id}:{seq}&token={token}

`token` is HMAC-SHA256 of the reference (`message_id:seq`, the client reference the carrier
already gets), truncated to 128 bits, url-safe base64 (22 characters, no escaping anywhere:
Kannel copies it through its `dlr-url` untouched). The key is derived from the server key
(`SMSQ_SECRET_KEY`) for this purpose only, never the raw key. Without a server key no tokens
are issued, and only requests a carrier signed can be accepted.

A request is accepted (`CallbackAuth.check`) when it carries a valid token, or, as the
carrier's adapter declares (`worker.carriers.base.ReceiptAuth`):
- `RECEIPT_SECRET` (sim, http) with a `receipt_secret` configured: a valid Standard Webhooks
  signature (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`; what an
  upstream smsq sends, and what `smsq carrier-sim --receipt-secret` sends), covering requests
  that batch the receipts of many segments;
- `SIGNATURE` (twilio): the carrier's own signature is always required (Twilio signs the full
  URL, token included); a token, if present, must be valid too.
A token or signature that is present must be valid even when the other one would do.

A token vouches for one segment only: where the request itself names the segment (Kannel's
`id` is ours: `CarrierAdapter.wrong_segment`) that is checked here, and otherwise the worker
checks, when it applies a receipt, that the receipt's carrier id belongs to the segment the
token named (`bound_ref`, `worker.inbound`).

Inbound messages (`/carriers/{name}/mo`, `CallbackAuth.check_mo`) name no segment: a request
is accepted with the carrier's signature (Twilio's, always required for `twilio`; Standard
Webhooks with the `receipt_secret` of `sim` / `http`), or with the carrier's MO token,
`token=` in the URL the operator configured (Kannel's sms-service `get-url`): HMAC-SHA256 of
`mo:{name}` under the same derived key, 128 bits, url-safe base64 (`mo_url`, printed by
`smsq carriers mo-url`). As for receipts, whichever is present must be valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from worker.carriers.adapters import Adapter
from worker.carriers.base import InboundRequest, ReceiptAuth, SignatureCheck
from worker.carriers.config import CarrierConfig, CarriersConfig
from worker.settings import Settings, get_settings
from worker.webhooks import sign

REF_PARAM = "ref"
TOKEN_PARAM = "token"
TOKEN_BYTES = 16  # 128 bits
KEY_LABEL = b"smsq carrier-receipts v1"
SIMULATOR_SECRET_LABEL = b"smsq carrier-sim receipt secret v1"
SIGNATURE_TOLERANCE_SECONDS = 300  # Standard Webhooks: refuse timestamps further off

# Why a request (or one receipt of it) was refused: the `reason` label of
# `smsq_carrier_receipts_refused_total`.
MISSING_TOKEN = "missing_token"
BAD_TOKEN = "bad_token"
BAD_SIGNATURE = "bad_signature"
WRONG_SEGMENT = "wrong_segment"
NO_SERVER_KEY = "no_server_key"


def receipt_key(server_key: str) -> bytes | None:
    """The key tokens are made with, derived from the server key; None without one."""
    if not server_key:
        return None
    return hmac.new(server_key.encode(), KEY_LABEL, hashlib.sha256).digest()


@lru_cache(maxsize=4)
def _settings_key(server_key: str) -> bytes | None:
    return receipt_key(server_key)


def segment_ref(message_id: str, seq: int) -> str:
    """A segment's carrier reference, `message_id:seq` (what its token is made of)."""
    return f"{message_id}:{seq}"


def segment_token(key: bytes, ref: str) -> str:
    """The token of one segment reference: 128 bits of HMAC-SHA256, url-safe, unpadded."""
    digest = hmac.new(key, ref.encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_valid_token(key: bytes, ref: str, token: str) -> bool:
    """Whether `token` is the token of `ref`, compared in constant time."""
    return hmac.compare_digest(segment_token(key, ref).encode(), token.encode("utf-8", "replace"))


def segment_receipt_url(
    base_url: str, message_id: str, seq: int, settings: Settings | None = None
) -> str:
    """`base_url` (`…/carriers/{name}/dlr`) with the segment's reference and token; the bare
    URL when no server key is configured (then only signed requests get in)."""
    key = _settings_key((settings or get_settings()).secret_key.get_secret_value())
    if key is None:
        return base_url
    ref = segment_ref(message_id, seq)
    return f"{base_url}?{REF_PARAM}={ref}&{TOKEN_PARAM}={segment_token(key, ref)}"


def mo_token(key: bytes, name: str) -> str:
    """Carrier `name`'s MO token: what its `/carriers/{name}/mo` URL carries as `token`."""
    return segment_token(key, f"mo:{name}")


def mo_url(public_url: str, name: str, settings: Settings | None = None) -> str:
    """The URL carrier `name` sends inbound messages to, with its MO token (bare without a
    server key: then only signed requests get in)."""
    base = f"{public_url.rstrip('/')}/carriers/{name}/mo"
    key = _settings_key((settings or get_settings()).secret_key.get_secret_value())
    return base if key is None else f"{base}?{TOKEN_PARAM}={mo_token(key, name)}"


def for_carrier(receipt_url: str, public_url: str, name: str) -> str:
    """A segment's receipt URL moved to carrier `name`'s path, its reference and token kept
    (the token names the segment, not the carrier)."""
    query = urlsplit(receipt_url).query
    return f"{public_url.rstrip('/')}/carriers/{name}/dlr" + (f"?{query}" if query else "")


def bound_ref(request: InboundRequest) -> str | None:
    """The segment the request's token vouched for, if it came with one: its receipts may
    concern that segment only."""
    return request.query.get(REF_PARAM) or None


def is_signed_by(secret: str, request: InboundRequest, *, now: float | None = None) -> bool:
    """Whether a Standard Webhooks signature by `secret` covers the request: its body, or for
    a GET its exact query string (as smsq signs its own receipts, `worker.webhooks`)."""
    headers = request.headers
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not msg_id or "." in msg_id or not stamp.isascii() or not stamp.isdigit() or not given:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    payload = request.body if request.method != "GET" else urlsplit(request.url).query.encode()
    expected = sign([secret], msg_id, int(stamp), payload).encode()
    return any(hmac.compare_digest(expected, part.encode()) for part in given.split())


def simulator_secret(server_key: str) -> str:
    """A `whsec_` receipt secret derived from the server key: what `smsq up` gives its
    simulator and the API (stable across restarts of one data directory)."""
    digest = hmac.new(server_key.encode(), SIMULATOR_SECRET_LABEL, hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode("ascii")


def up_environment(settings: Settings, server_key: str) -> dict[str, str]:
    """What `smsq up` adds to its children's environment for carrier receipts: a receipt
    secret shared by its simulator and the API, unless one was configured."""
    if settings.carriers_file or settings.carrier != "sim":
        return {}
    if settings.carrier_receipt_secret.get_secret_value():
        return {}
    return {"SMSQ_CARRIER_RECEIPT_SECRET": simulator_secret(server_key)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """`check`'s answer: refused for `reason` (None: accepted), and the segment a token named."""

    reason: str | None
    ref: str | None = None
    field: str | None = None  # the request part at fault, for the error reply


@dataclass(frozen=True, slots=True)
class _Carrier:
    """What checking one carrier's callbacks needs (secrets read once, at start)."""

    type: str
    adapter: Adapter
    receipt_secret: str  # `ReceiptAuth.RECEIPT_SECRET`: "" when none is configured
    signature: SignatureCheck | None  # `ReceiptAuth.SIGNATURE`: the carrier's own check


class CallbackAuth:
    """The API process's check of `/carriers/{name}/dlr` requests (module doc)."""

    def __init__(self, carriers: CarriersConfig, server_key: str, public_url: str) -> None:
        self._key = receipt_key(server_key)
        self._carriers = {
            name: _prepared(name, config, public_url) for name, config in carriers.carriers.items()
        }

    def __repr__(self) -> str:
        return f"CallbackAuth({sorted(self._carriers)})"

    def is_configured(self, name: str) -> bool:
        return name in self._carriers

    def type_of(self, name: str) -> str:
        return self._carriers[name].type

    def lists_receipts(self, name: str) -> bool:
        """Whether a request of carrier `name` may list many receipts (its adapter says)."""
        return self._carriers[name].adapter.lists_receipts

    def check(self, name: str, request: InboundRequest, *, now: float | None = None) -> Verdict:
        """Accept or refuse a request to a configured carrier's receipt URL."""
        carrier = self._carriers[name]
        token = request.query.get(TOKEN_PARAM)
        ref = request.query.get(REF_PARAM)
        if token is not None or ref is not None:
            refused = self._check_token(ref, token)
            if refused is not None:
                return refused
        signed = _signed(carrier, request, now)
        if signed is False:
            return Verdict(BAD_SIGNATURE, field="signature")
        if token is None and not signed:
            return Verdict(MISSING_TOKEN if self._key else NO_SERVER_KEY, field=TOKEN_PARAM)
        wrong = carrier.adapter.wrong_segment(request, ref) if ref is not None else None
        if wrong is not None:
            return Verdict(WRONG_SEGMENT, field=wrong)
        return Verdict(None, ref=ref)

    def check_mo(self, name: str, request: InboundRequest, *, now: float | None = None) -> Verdict:
        """Accept or refuse a request to a configured carrier's MO URL (module doc)."""
        carrier = self._carriers[name]
        token = request.query.get(TOKEN_PARAM)
        if token is not None:
            if self._key is None:
                return Verdict(NO_SERVER_KEY, field=TOKEN_PARAM)
            if not hmac.compare_digest(
                mo_token(self._key, name).encode(), token.encode("utf-8", "replace")
            ):
                return Verdict(BAD_TOKEN, field=TOKEN_PARAM)
        signed = _signed(carrier, request, now, route="mo")
        if signed is False:
            return Verdict(BAD_SIGNATURE, field="signature")
        if token is None and not signed:
            return Verdict(MISSING_TOKEN if self._key else NO_SERVER_KEY, field=TOKEN_PARAM)
        return Verdict(None)

    def _check_token(self, ref: str | None, token: str | None) -> Verdict | None:
        if self._key is None:
            return Verdict(NO_SERVER_KEY, field=TOKEN_PARAM)
        if not ref or not token:
            return Verdict(MISSING_TOKEN, field=TOKEN_PARAM if ref else REF_PARAM)
        if not is_valid_token(self._key, ref, token):
            return Verdict(BAD_TOKEN, field=TOKEN_PARAM)
        return None



def _signed(
    carrier: _Carrier, request: InboundRequest, now: float | None, route: str = "dlr"
) -> bool | None:
    """True or False when the carrier's signature is required or offered; None when the
    request offers none it could be checked by."""
    if carrier.signature is not None:
        return carrier.signature(request, route)
    if carrier.receipt_secret and "webhook-signature" in request.headers:
        return is_signed_by(carrier.receipt_secret, request, now=now)
    return None


def _prepared(name: str, config: CarrierConfig, public_url: str) -> _Carrier:
    adapter = config.adapter
    signature = None
    if adapter.receipt_auth is ReceiptAuth.SIGNATURE:
        signature = adapter.receipt_signature(config.options, name=name, public_url=public_url)
        if signature is None:
            raise TypeError(f"{adapter.__name__} declares SIGNATURE without a receipt_signature")
    return _Carrier(
        type=config.type,
        adapter=adapter,
        receipt_secret=config.receipt_secret.get_secret_value(),
        signature=signature,
    )
