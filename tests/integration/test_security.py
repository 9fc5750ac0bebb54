"""Security end to end: receipt URLs refused at submission, redirects not followed, signing
secrets rotated with an overlap, limits shared by every API process, keys kept apart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from producer.api import create_app
from tests.integration.stack import SECRET_KEY, Stack, running_stack, wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.keys import CreatedKey, KeyStore
from worker.settings import Settings

pytestmark = pytest.mark.integration

TO = "+14155552671"
# Receipt URLs the API refuses (the stack allows 127.0.0.0/8 only, as a development setup).
UNSAFE_URLS = [
    "http://10.0.0.1/dlr",
    "http://172.16.5.4/dlr",
    "http://192.168.1.1/dlr",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/dlr",
    "http://0.0.0.0:8000/dlr",
    "http://224.0.0.1/dlr",
    "http://[::1]/dlr",
    "http://[fd00::1]/dlr",
    "http://[fe80::1]/dlr",
    "http://[::ffff:10.0.0.1]/dlr",
    "http://[64:ff9b::a00:1]/dlr",
    "http://2130706433/dlr",
    "http://0x7f.0.0.1/dlr",
    "http://user:pw@example.com/dlr",
    "file:///etc/passwd",
    "gopher://example.com/",
]


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    with running_stack(redis_server_url) as running:
        yield running


def auth(key: CreatedKey) -> dict[str, str]:
    return {"authorization": f"Bearer {key.api_key}"}


def receipts_of(stack: Stack, message_id: str, count: int) -> list[Any]:
    def arrived() -> list[Any] | None:
        found = [r for r in stack.receiver.snapshot() if message_id.encode() in r.body]
        return found if len(found) >= count else None

    result: list[Any] = wait_for(arrived, 30, f"no {count} receipts for {message_id}")
    return result


class TestReceiptUrlsAtSubmission:
    @pytest.mark.parametrize("url", UNSAFE_URLS)
    def test_send_refuses_an_unsafe_receipt_url(self, stack: Stack, url: str) -> None:
        """Each refused address class (and scheme, userinfo, odd IPv4 form) is a 422 on dlr-url."""
        reply = stack.send({"to": TO, "content": "hi", "dlr": True, "dlr-url": url})
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == "dlr-url"

    def test_batch_with_an_unsafe_receipt_url_is_refused_whole(self, stack: Stack) -> None:
        """A batch whose receipt URL is internal is one 422 naming dlr-url; nothing is stored."""
        body = {
            "content": "hi",
            "recipients": [TO, "+14155552672"],
            "dlr": True,
            "dlr-url": "http://169.254.169.254/",
        }
        reply = stack.http.post(f"{stack.api_url}/sms/batch", json=body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == "dlr-url"
        assert stack.redis.keys("smsq:batch:*") == []

    def test_otp_refuses_it_too(self, stack: Stack) -> None:
        """An OTP's receipt URL goes through the same check."""
        body = {"to": TO, "dlr-url": "http://10.1.2.3/"}
        reply = stack.http.post(f"{stack.api_url}/otp/send", json=body)
        assert reply.status_code == 422
        assert reply.json()["error"]["field"] == "dlr-url"


class TestRedirects:
    def test_a_redirect_to_an_internal_address_is_not_followed(self, stack: Stack) -> None:
        """The receipt URL answers 302 to an internal server: that server sees nothing, and the
        attempt is recorded as rejected with the 302."""
        internal = Receiver()

        async def redirect(_: Request) -> Response:
            return Response(status_code=302, headers={"location": f"{internal_url}/steal"})

        redirector = Starlette(routes=[Route("/{p:path}", redirect, methods=["GET", "POST"])])
        with serve_app(internal.app()) as internal_url, serve_app(redirector) as redirect_url:
            body = {"to": TO, "content": "hi", "dlr": True, "dlr-url": f"{redirect_url}/dlr"}
            message_id = stack.send(body).json()["id"]

            def rejected() -> dict[str, Any] | None:
                events = stack.message(message_id)["events"]
                return next((e for e in events if e["event"].startswith("receipt_")), None)

            event = wait_for(rejected, 30, "no receipt attempt was recorded")
            assert (event["event"], event["status_code"]) == ("receipt_WebhookRejectedError", 302)
            assert internal.snapshot() == []


class TestSecretRotation:
    def test_receipts_carry_both_signatures_during_the_overlap(self, stack: Stack) -> None:
        """After `rotate-secret`, receipts are signed by the old and the new secret, each of
        which the reference verifier accepts; once the overlap ends only the new one signs."""
        store = KeyStore(stack.redis)
        old = stack.key.webhook_secret
        new = store.rotate_secret(stack.key.key.id, overlap_seconds=2)
        assert new is not None
        body = {"to": TO, "content": "hi", "dlr": True, "dlr-url": f"{stack.receiver_url}/r"}
        first = stack.send(body).json()["id"]
        (during,) = receipts_of(stack, first, 1)
        assert len(during.headers["webhook-signature"].split()) == 2
        for secret in (old, new):
            assert Webhook(secret).verify(during.body, during.headers)["id"] == first
        time.sleep(2.1)
        second = stack.send(body).json()["id"]
        (after,) = receipts_of(stack, second, 1)
        assert len(after.headers["webhook-signature"].split()) == 1
        assert Webhook(new).verify(after.body, after.headers)["id"] == second
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(after.body, after.headers)


@pytest.fixture(scope="module")
def second_api(stack: Stack) -> Iterator[str]:
    """Another API process's worth of app on the same Redis."""
    settings = Settings(redis_url=stack.redis_url, secret_key=SECRET_KEY)
    with serve_app(create_app(settings)) as url:
        yield url


class TestLimitsAcrossApiProcesses:
    def test_rate_is_one_limit_for_every_api(self, stack: Stack, second_api: str) -> None:
        """A key at 1 call/s used on one API is refused on the other (429, Retry-After)."""
        key = KeyStore(stack.redis).create("slow", rate=1.0, burst=1)
        path = "/sms/0123456789abcdef0123456789abcdef"
        assert stack.http.get(f"{stack.api_url}{path}", headers=auth(key)).status_code == 404
        refused = stack.http.get(f"{second_api}{path}", headers=auth(key))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"

    def test_daily_quota_is_shared_too(self, stack: Stack, second_api: str) -> None:
        """A quota of 1 message used on one API is used up on the other."""
        key = KeyStore(stack.redis).create("tiny", daily=1)
        body = {"to": TO, "content": "hi"}
        sent = stack.http.post(f"{stack.api_url}/sms/send", json=body, headers=auth(key))
        assert sent.status_code == 202
        refused = stack.http.post(f"{second_api}/sms/send", json=body, headers=auth(key))
        assert refused.status_code == 429
        assert "daily quota" in refused.json()["error"]["message"]


class TestKeysApart:
    def test_another_keys_otp_and_batch_are_404(self, stack: Stack) -> None:
        """A second key sees none of the first key's messages, batches or codes."""
        other = KeyStore(stack.redis).create("other")
        otp = stack.http.post(f"{stack.api_url}/otp/send", json={"to": "+14155550100"}).json()
        batch = stack.http.post(
            f"{stack.api_url}/sms/batch", json={"content": "hi", "recipients": [TO]}
        ).json()
        for path in (
            f"/otp/{otp['id']}",
            f"/sms/{otp['message_id']}",
            f"/sms/batch/{batch['id']}",
        ):
            reply = stack.http.get(f"{stack.api_url}{path}", headers=auth(other))
            assert reply.status_code == 404, path
        verdict = stack.http.post(
            f"{stack.api_url}/otp/verify",
            json={"id": otp["id"], "code": "123456"},
            headers=auth(other),
        )
        assert orjson.loads(verdict.content)["status"] == "not_found"
