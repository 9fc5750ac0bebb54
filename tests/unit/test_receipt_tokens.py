"""Per-segment receipt tokens, carrier signatures and who `CallbackAuth` lets in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from worker.carriers.base import InboundRequest
from worker.carriers.config import CarrierConfig, CarriersConfig, RouteConfig, single_carrier
from worker.carriers.twilio import signature as twilio_signature
from worker.ratelimit import SourceLimiter
from worker.receipts.tokens import (
    BAD_SIGNATURE,
    BAD_TOKEN,
    MISSING_TOKEN,
    NO_SERVER_KEY,
    WRONG_SEGMENT,
    CallbackAuth,
    for_carrier,
    is_signed_by,
    is_valid_token,
    receipt_key,
    segment_receipt_url,
    segment_token,
    simulator_secret,
    up_environment,
)
from worker.settings import Settings
from worker.webhooks import generate_secret, signature_headers

SERVER_KEY = "unit-test-server-key"
KEY = receipt_key(SERVER_KEY)
PUBLIC = "https://sms.test"
SECRET = generate_secret()
TWILIO_TOKEN = "f" * 32


def key() -> bytes:
    assert KEY is not None
    return KEY


class TestTokens:
    def test_a_token_is_128_bits_url_safe(self) -> None:
        token = segment_token(key(), "m1:1")
        assert len(token) == 22  # 16 bytes, base64 without padding
        assert base64.urlsafe_b64decode(token + "==")
        assert token.replace("-", "").replace("_", "").isalnum()

    def test_tokens_differ_per_segment_and_per_server_key(self) -> None:
        tokens = {segment_token(key(), ref) for ref in ("m1:1", "m1:2", "m2:1")}
        assert len(tokens) == 3
        other = receipt_key("another-server-key")
        assert other is not None
        assert segment_token(other, "m1:1") != segment_token(key(), "m1:1")

    def test_the_key_is_derived_not_the_server_key_itself(self) -> None:
        """A token made with the raw server key is not valid: the key is purpose-derived."""
        raw = hmac.new(SERVER_KEY.encode(), b"m1:1", hashlib.sha256).digest()[:16]
        forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert not is_valid_token(key(), "m1:1", forged)
        assert key() != SERVER_KEY.encode()

    def test_only_the_segments_own_token_is_valid(self) -> None:
        token = segment_token(key(), "m1:1")
        assert is_valid_token(key(), "m1:1", token)
        assert not is_valid_token(key(), "m1:2", token)
        assert not is_valid_token(key(), "m1:1", token[:-1])
        assert not is_valid_token(key(), "m1:1", "")
        assert not is_valid_token(key(), "m1:1", "é" * 22)

    def test_no_server_key_no_token(self) -> None:
        assert receipt_key("") is None

    def test_the_receipt_url_names_the_segment_and_its_token(self) -> None:
        settings = Settings(secret_key=SERVER_KEY)
        url = segment_receipt_url(f"{PUBLIC}/carriers/sim/dlr", "m1", 2, settings)
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https",
            "sms.test",
            "/carriers/sim/dlr",
        )
        query = parse_qs(parts.query)
        assert query == {"ref": ["m1:2"], "token": [segment_token(key(), "m1:2")]}

    def test_without_a_server_key_the_url_is_bare(self) -> None:
        url = segment_receipt_url(f"{PUBLIC}/carriers/sim/dlr", "m1", 2, Settings(secret_key=""))
        assert url == f"{PUBLIC}/carriers/sim/dlr"

    def test_moving_a_url_to_another_carrier_keeps_its_token(self) -> None:
        url = for_carrier(f"{PUBLIC}/carriers/routes/dlr?ref=m1:1&token=abc", PUBLIC + "/", "b")
        assert url == f"{PUBLIC}/carriers/b/dlr?ref=m1:1&token=abc"
        assert for_carrier(f"{PUBLIC}/carriers/routes/dlr", PUBLIC, "b") == (
            f"{PUBLIC}/carriers/b/dlr"
        )


def request(
    query: dict[str, str] | None = None,
    *,
    method: str = "POST",
    body: bytes = b'{"carrier_id": "c1", "status": "DELIVRD"}',
    headers: dict[str, str] | None = None,
    url: str = f"{PUBLIC}/carriers/sim/dlr",
    form: dict[str, str] | None = None,
) -> InboundRequest:
    query = query or {}
    full = url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return InboundRequest(method, full, query, headers or {}, body, form or {})


def with_token(ref: str = "m1:1", **extra: str) -> dict[str, str]:
    return {"ref": ref, "token": segment_token(key(), ref), **extra}


def signed_headers(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return signature_headers([secret], "msg_1", int(time.time() if at is None else at), body)


class TestSignatures:
    def test_a_standard_webhooks_signature_of_the_body(self) -> None:
        body = b'[{"carrier_id": "c1"}]'
        assert is_signed_by(SECRET, request(body=body, headers=signed_headers(body)))

    def test_another_secret_a_changed_body_or_an_old_timestamp_fail(self) -> None:
        body = b'[{"carrier_id": "c1"}]'
        assert not is_signed_by(
            SECRET, request(body=body, headers=signed_headers(body, generate_secret()))
        )
        assert not is_signed_by(SECRET, request(body=body + b" ", headers=signed_headers(body)))
        old = signed_headers(body, at=time.time() - 600)
        assert not is_signed_by(SECRET, request(body=body, headers=old))
        assert not is_signed_by(SECRET, request(body=body, headers={}))

    def test_a_get_is_signed_over_its_query_string(self) -> None:
        """As smsq signs its own GET receipts: the exact query string is the payload."""
        query = {"id": "c1", "status": "delivered"}
        headers = signed_headers(b"id=c1&status=delivered")
        assert is_signed_by(SECRET, request(query, method="GET", body=b"", headers=headers))


def carriers(**configs: CarrierConfig) -> CarriersConfig:
    return CarriersConfig(carriers=configs, routes=(RouteConfig(carriers=(next(iter(configs)),)),))


SIM = CarrierConfig(type="sim", url="http://sim.test")
SIGNING_SIM = CarrierConfig(type="sim", url="http://sim.test", receipt_secret=SECRET)
KANNEL = CarrierConfig(type="kannel", url="http://kannel.test")
TWILIO = CarrierConfig(
    type="twilio", url="https://api.twilio.test", username="AC1", password=TWILIO_TOKEN
)
AUTH = CallbackAuth(
    carriers(sim=SIM, signing=SIGNING_SIM, kannel=KANNEL, twilio=TWILIO), SERVER_KEY, PUBLIC
)


class TestCallbackAuth:
    def test_only_configured_carriers(self) -> None:
        assert AUTH.is_configured("sim")
        assert AUTH.is_configured("twilio")
        assert not AUTH.is_configured("http")
        assert AUTH.type_of("signing") == "sim"

    def test_a_valid_token_gets_in_and_names_its_segment(self) -> None:
        verdict = AUTH.check("sim", request(with_token("m1:1")))
        assert (verdict.reason, verdict.ref) == (None, "m1:1")

    @pytest.mark.parametrize(
        ("query", "reason", "field"),
        [
            ({}, MISSING_TOKEN, "token"),
            ({"ref": "m1:1"}, MISSING_TOKEN, "token"),
            ({"token": "abc"}, MISSING_TOKEN, "ref"),
            ({"ref": "m1:1", "token": "abc"}, BAD_TOKEN, "token"),
            ({"ref": "m1:2", "token": segment_token(key(), "m1:1")}, BAD_TOKEN, "token"),
        ],
    )
    def test_no_or_a_wrong_token_is_refused(
        self, query: dict[str, str], reason: str, field: str
    ) -> None:
        verdict = AUTH.check("sim", request(query))
        assert (verdict.reason, verdict.field) == (reason, field)

    def test_a_signed_batch_needs_no_token(self) -> None:
        body = b'[{"carrier_id": "c1", "status": "DELIVRD"}]'
        verdict = AUTH.check("signing", request(body=body, headers=signed_headers(body)))
        assert (verdict.reason, verdict.ref) == (None, None)

    def test_a_bad_signature_is_refused_even_with_a_valid_token(self) -> None:
        body = b'{"carrier_id": "c1", "status": "DELIVRD"}'
        forged = signed_headers(body, generate_secret())
        verdict = AUTH.check("signing", request(with_token(), body=body, headers=forged))
        assert verdict.reason == BAD_SIGNATURE

    def test_a_signature_is_ignored_where_no_secret_is_configured(self) -> None:
        """An upstream smsq signs with its own key's secret: without `receipt_secret` the
        token decides."""
        body = b'{"carrier_id": "c1", "status": "DELIVRD"}'
        headers = signed_headers(body, generate_secret())
        assert AUTH.check("sim", request(with_token(), body=body, headers=headers)).reason is None
        assert AUTH.check("sim", request(body=body, headers=headers)).reason == MISSING_TOKEN

    def test_kannel_needs_the_token_and_the_id_of_its_segment(self) -> None:
        url = f"{PUBLIC}/carriers/kannel/dlr"
        good = with_token("m1:2", id="m1.2", type="1")
        assert AUTH.check("kannel", request(good, method="GET", body=b"", url=url)).reason is None
        other = with_token("m1:2", id="m9.1", type="2")
        verdict = AUTH.check("kannel", request(other, method="GET", body=b"", url=url))
        assert (verdict.reason, verdict.field) == (WRONG_SEGMENT, "id")
        bare = {"id": "m1.2", "type": "2"}
        verdict = AUTH.check("kannel", request(bare, method="GET", body=b"", url=url))
        assert verdict.reason == MISSING_TOKEN

    def test_twilio_needs_its_signature_over_the_tokenised_url(self) -> None:
        query = with_token("m1:1")
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        url = f"{PUBLIC}/carriers/twilio/dlr"
        full = f"{url}?ref={query['ref']}&token={query['token']}"
        headers = {"x-twilio-signature": twilio_signature(full, form, TWILIO_TOKEN)}
        verdict = AUTH.check("twilio", request(query, url=url, form=form, headers=headers))
        assert (verdict.reason, verdict.ref) == (None, "m1:1")
        forged = {"x-twilio-signature": twilio_signature(full, form, "not-the-token")}
        verdict = AUTH.check("twilio", request(query, url=url, form=form, headers=forged))
        assert verdict.reason == BAD_SIGNATURE
        assert AUTH.check("twilio", request(query, url=url, form=form)).reason == BAD_SIGNATURE

    def test_without_a_server_key_tokens_cannot_be_checked(self) -> None:
        auth = CallbackAuth(carriers(sim=SIM, signing=SIGNING_SIM), "", PUBLIC)
        assert auth.check("sim", request(with_token())).reason == NO_SERVER_KEY
        assert auth.check("sim", request()).reason == NO_SERVER_KEY
        body = b'{"carrier_id": "c1", "status": "DELIVRD"}'
        signed = request(body=body, headers=signed_headers(body))
        assert auth.check("signing", signed).reason is None


class TestConfig:
    def test_a_receipt_secret_must_be_a_webhook_secret(self) -> None:
        with pytest.raises(ValueError, match="whsec_"):
            CarrierConfig(type="sim", url="http://sim.test", receipt_secret="plain words")

    def test_a_receipt_secret_is_for_sim_and_http_only(self) -> None:
        with pytest.raises(ValueError, match="receipt_secret"):
            CarrierConfig(type="kannel", url="http://k.test", receipt_secret=SECRET)

    def test_smsq_up_shares_a_derived_secret_with_its_simulator(self) -> None:
        env = up_environment(Settings(carrier="sim"), SERVER_KEY)
        assert env == {"SMSQ_CARRIER_RECEIPT_SECRET": simulator_secret(SERVER_KEY)}
        assert env["SMSQ_CARRIER_RECEIPT_SECRET"].startswith("whsec_")
        assert simulator_secret(SERVER_KEY) != simulator_secret("another-key")
        assert up_environment(Settings(carrier="kannel"), SERVER_KEY) == {}
        assert up_environment(Settings(carrier_receipt_secret=SECRET), SERVER_KEY) == {}


class TestSourceLimiter:
    def test_a_burst_then_the_rate(self) -> None:
        now = [100.0]
        limiter = SourceLimiter(10, burst=3, clock=lambda: now[0])
        assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.wait("a") == pytest.approx(0.1)
        assert limiter.wait("b") == 0.0  # each source has its own
        now[0] += 0.1
        assert limiter.wait("a") == 0.0
        assert limiter.wait("a") > 0

    def test_remembers_a_bounded_number_of_sources(self) -> None:
        now = [0.0]
        limiter = SourceLimiter(1, burst=1, max_sources=2, clock=lambda: now[0])
        assert limiter.wait("a") == 0.0
        assert limiter.wait("a") > 0
        limiter.wait("b")
        limiter.wait("c")  # "a" is forgotten: it starts again with a full burst
        assert limiter.wait("a") == 0.0


def test_a_deployment_wide_receipt_secret_is_ignored_by_carriers_that_do_not_sign() -> None:
    """SMSQ_CARRIER_RECEIPT_SECRET set for a deployment running Kannel starts (Kannel
    authenticates by the per-segment token); a carriers file naming it for Kannel is refused."""
    secret = simulator_secret("server-key")
    settings = Settings(carrier="kannel", carrier_receipt_secret=secret)
    config = single_carrier(settings).carriers["kannel"]
    assert config.receipt_secret.get_secret_value() == ""
    sim = single_carrier(Settings(carrier="sim", carrier_receipt_secret=secret)).carriers["sim"]
    assert sim.receipt_secret.get_secret_value() == secret
