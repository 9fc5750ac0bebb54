"""Security end to end: receipt URLs refused at submission (smsq up's own services too),
redirects not followed, signing secrets rotated with an overlap, limits shared by every API
process, keys kept apart (OTP limits per key, geo permissions per key)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import phonenumbers
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from producer import cli
from producer.api import create_app
from producer.up import child_env
from tests.integration.api_process import api_process
from tests.integration.stack import REPO, SECRET_KEY, Stack, running_stack, wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.keys import CreatedKey, KeyStore
from worker.receipts.engine import SECRETS_TTL_MS
from worker.settings import Settings
from worker.webhooks import generate_secret

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
    # ipaddress.is_global calls these public; each reaches loopback or a private network.
    "http://[::127.0.0.1]/dlr",
    "http://[::ffff:0:7f00:1]/dlr",
    "http://[fec0::1]/dlr",
    "http://[2002:7f00:1::]/dlr",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/dlr",
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
        batches = set(stack.redis.keys("smsq:batch:*"))  # earlier tests' (the session's Redis)
        reply = stack.http.post(f"{stack.api_url}/sms/batch", json=body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["field"] == "dlr-url"
        assert set(stack.redis.keys("smsq:batch:*")) == batches

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
            assert (event["event"], event["status_code"]) == ("receipt_retry", 302)
            assert "redirects are not followed" in event["why"]
            assert internal.snapshot() == []


class TestSecretRotation:
    def test_receipts_carry_both_signatures_during_the_overlap(self, stack: Stack) -> None:
        """After `rotate-secret`, receipts are signed by the old and the new secret, each of
        which the reference verifier accepts; once the overlap ends only the new one signs."""
        store = KeyStore(stack.redis)
        old = stack.key.webhook_secret
        # The overlap must outlast the engine's secrets cache and the first receipt's way
        # through a loaded machine.
        new = store.rotate_secret(stack.key.key.id, overlap_seconds=12)
        assert new is not None
        time.sleep(SECRETS_TTL_MS / 1000)  # a rotation shows within that time (docs/security.md)
        body = {"to": TO, "content": "hi", "dlr": True, "dlr-url": f"{stack.receiver_url}/r"}
        first = stack.send(body).json()["id"]
        (during,) = receipts_of(stack, first, 1)
        assert len(during.headers["webhook-signature"].split()) == 2
        for secret in (old, new):
            assert Webhook(secret).verify(during.body, during.headers)["id"] == first
        wait_for(
            lambda: store.signing_secrets(stack.key.key.id) == (new,), 40, "the overlap never ended"
        )
        time.sleep(SECRETS_TTL_MS / 1000)  # the worker's engine reads them at most that often
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


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture(scope="module")
def dev_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API process with the environment `smsq up` gives its children, its simulator
    and API being the stack's."""
    settings = Settings(api_port=port_of(stack.api_url), sim_port=port_of(stack.sim_url))
    env = child_env(
        settings, stack.redis_url, SECRET_KEY, tmp_path_factory.mktemp("metrics"),
        port_of(stack.redis_url),
    )  # fmt: skip
    with api_process({k: v for k, v in env.items() if k.startswith("SMSQ_")}) as url:
        yield url


class TestSmsqUpsOwnServices:
    def test_a_dlr_url_at_smsqs_own_ports_is_refused(self, stack: Stack, dev_api: str) -> None:
        """Under smsq up's loopback allow-list, a dlr-url at the simulator, API or Redis port
        is a 422 naming SMSQ_DLR_DENY, in any spelling of loopback."""
        sim, api, redis_port = (port_of(u) for u in (stack.sim_url, stack.api_url, stack.redis_url))
        urls = [
            f"http://127.0.0.1:{sim}/reset", f"http://127.0.0.1:{api}/sms/send",
            f"http://127.0.0.1:{redis_port}/", f"http://localhost:{sim}/reset",
            f"http://127.0.0.2:{sim}/reset", f"http://[::ffff:127.0.0.1]:{sim}/reset",
            f"http://[::1]:{api}/",
        ]  # fmt: skip
        for url in urls:
            body = {"to": TO, "content": "hi", "dlr": True, "dlr-url": url}
            reply = stack.http.post(f"{dev_api}/sms/send", json=body)
            assert reply.status_code == 422, (url, reply.text)
            error = reply.json()["error"]
            assert (error["field"], error["code"]) == ("dlr-url", "unsafe_url")
            assert "SMSQ_DLR_DENY" in error["message"]

    def test_a_local_receiver_still_gets_receipts(self, stack: Stack, dev_api: str) -> None:
        """Other loopback ports stay allowed: a receiver on this machine works as before."""
        body = {"to": TO, "content": "hi", "dlr": True, "dlr-url": f"{stack.receiver_url}/r"}
        assert stack.http.post(f"{dev_api}/sms/send", json=body).status_code == 202


COMOROS = "+2693212345"


class TestGeoPermissions:
    def test_comoros_is_refused_by_default_naming_the_country(self, stack: Stack) -> None:
        """Out of the box, an SMS, an OTP and a batch recipient to Comoros are refused."""
        sms = stack.send({"to": COMOROS, "content": "hi"})
        otp = stack.http.post(f"{stack.api_url}/otp/send", json={"to": COMOROS})
        for reply in (sms, otp):
            assert reply.status_code == 422, reply.text
            error = reply.json()["error"]
            assert (error["field"], error["code"]) == ("to", "country_not_allowed")
            assert error["message"] == "+269… (KM, Comoros) is not in this key's allowed countries"
        batch = stack.http.post(
            f"{stack.api_url}/sms/batch", json={"content": "hi", "recipients": [TO, COMOROS]}
        ).json()
        assert batch["accepted"] == 1
        assert [r["error"]["code"] for r in batch["rejected"]] == ["country_not_allowed"]

    def test_a_key_allowed_there_may_send(self, stack: Stack) -> None:
        """`smsq keys create --countries KM,US` opens Comoros for that key alone; `keys list`
        shows it."""
        runner, env = CliRunner(), {"SMSQ_REDIS_URL": stack.redis_url}
        created = runner.invoke(cli.app, ["keys", "create", "km", "--countries", "km,us"], env=env)
        assert created.exit_code == 0, created.output
        key_id, api_key = created.output.split()[2], created.output.split()[5]
        listed = runner.invoke(cli.app, ["keys", "list"], env=env)
        line = next(line for line in listed.output.splitlines() if line.startswith(key_id))
        assert line.endswith("countries=KM,US")
        headers = {"authorization": f"Bearer {api_key}"}
        body = {"to": COMOROS, "content": "hi"}
        assert (
            stack.http.post(f"{stack.api_url}/sms/send", json=body, headers=headers).status_code
            == 202
        )
        refused = stack.http.post(
            f"{stack.api_url}/sms/send", json=body | {"to": "+4915112345678"}, headers=headers
        )
        assert refused.json()["error"]["message"].startswith("+49… (DE, Germany) is not")

    def test_keys_limits_changes_or_clears_a_keys_countries(self, stack: Stack) -> None:
        """`smsq keys limits ID --countries` replaces the list, refuses unknown codes without
        changing anything, and `''` goes back to the deployment's."""
        runner, env = CliRunner(), {"SMSQ_REDIS_URL": stack.redis_url}
        store = KeyStore(stack.redis)
        key_id = store.create("moving", countries=["US"], daily=10).key.id

        def limits(*args: str) -> tuple[int, tuple[str, ...], int]:
            """The command's exit code, then the key's countries and daily quota."""
            code = runner.invoke(cli.app, ["keys", "limits", key_id, *args], env=env).exit_code
            key = store.get(key_id)
            assert key is not None
            return code, key.countries, key.daily

        assert limits("--countries", "km,gb") == (0, ("KM", "GB"), 10)
        assert limits("--daily", "20", "--countries", "XX") == (2, ("KM", "GB"), 10)
        assert limits("--countries", "") == (0, (), 10)

    def test_premium_rate_numbers_stay_refused_for_codes(self, stack: Stack) -> None:
        """A key allowed everywhere still gets no code sent to a premium-rate number."""
        key = KeyStore(stack.redis).create("anywhere", countries=["*"])
        reply = stack.http.post(
            f"{stack.api_url}/otp/send", json={"to": "+19005551234"}, headers=auth(key)
        )
        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "number_type_refused"


def distinct_numbers(template: str, count: int) -> list[str]:
    numbers = [template.format(n) for n in range(count)]
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in numbers)
    return numbers


@pytest.fixture(scope="module")
def otp_api(stack: Stack) -> Iterator[str]:
    """An API process with small OTP limits (3 per key and range, 4 per key and country) and
    ceilings (7 per range), on the stack's Redis and workers."""
    for pattern in ("smsq:otp:limit:*", "smsq:otp:ceiling:*"):  # counts of earlier modules
        for key in stack.redis.scan_iter(pattern):
            stack.redis.delete(key)
    env = {
        "SMSQ_REDIS_URL": stack.redis_url, "SMSQ_SECRET_KEY": SECRET_KEY,
        "SMSQ_OTP_LIMIT_PREFIX": "3", "SMSQ_OTP_CEILING_PREFIX": "7",
        "SMSQ_OTP_LIMIT_COUNTRY": "4", "SMSQ_OTP_CEILING_COUNTRY": "40",
    }  # fmt: skip
    with api_process(env) as url:
        yield url


class TestOtpLimitsPerKey:
    """Two tenants (two keys) against one running system: an API process with small OTP
    limits, the stack's worker and the session's Redis."""

    def send(self, api: str, stack: Stack, key: CreatedKey, to: str) -> httpx.Response:
        return stack.http.post(f"{api}/otp/send", json={"to": to}, headers=auth(key))

    def test_one_key_using_up_a_number_range_does_not_refuse_another(
        self, stack: Stack, otp_api: str
    ) -> None:
        """Tenant B sends codes across +1212555xxxx until its own range limit refuses it; tenant
        A's code to the same range is still sent."""
        store = KeyStore(stack.redis)
        a, b = store.create("tenant-a"), store.create("tenant-b")
        for number in distinct_numbers("+1212555{:04d}", 3):
            assert self.send(otp_api, stack, b, number).status_code == 202
        refused = self.send(otp_api, stack, b, "+12125550099")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "with this API key" in refused.json()["error"]["message"]
        assert self.send(otp_api, stack, a, "+12125550100").status_code == 202

    def test_one_key_using_up_a_country_does_not_refuse_another(
        self, stack: Stack, otp_api: str
    ) -> None:
        """Tenant B sends codes to German numbers of four ranges until its country limit
        refuses it; tenant A's code to Germany is still sent."""
        store = KeyStore(stack.redis)
        a, b = store.create("tenant-a"), store.create("tenant-b")
        numbers = distinct_numbers("+49151{:04d}0001", 6)
        for number in numbers[:4]:
            assert self.send(otp_api, stack, b, number).status_code == 202
        refused = self.send(otp_api, stack, b, numbers[4])
        assert refused.status_code == 429
        assert refused.json()["error"]["message"].startswith("too many codes sent to this country")
        assert self.send(otp_api, stack, a, numbers[5]).status_code == 202

    def test_a_range_under_attack_says_so(self, stack: Stack, otp_api: str) -> None:
        """Keys within their own limits together reach the range's ceiling (7): the next key
        is refused with destination_under_attack, naming the range."""
        numbers = iter(distinct_numbers("+1310555{:04d}", 8))
        store = KeyStore(stack.redis)
        for name in ("k1", "k2"):
            key = store.create(name)
            for _ in range(3):
                assert self.send(otp_api, stack, key, next(numbers)).status_code == 202
        third = store.create("k3")
        assert self.send(otp_api, stack, third, next(numbers)).status_code == 202
        refused = self.send(otp_api, stack, third, next(numbers))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "destination_under_attack"
        assert error["message"].startswith("this number range is getting codes from many senders")
        assert int(refused.headers["retry-after"]) > 0


def doc_snippet(marker: str) -> str:
    """The Python block after `<!-- marker -->` in docs/security.md."""
    text = (REPO / "docs" / "security.md").read_text()
    after = text.split(f"<!-- {marker} -->\n", 1)[1]
    match = re.match(r"```python\n(.*?)```", after, re.S)
    assert match, f"no python block after {marker}"
    return match.group(1)


@pytest.fixture(scope="module")
def get_receipt(stack: Stack) -> tuple[str, Any]:
    """A signed level-1 GET receipt whose query needs encoding, and its key's secret."""
    key = KeyStore(stack.redis).create("get-receiver")
    body = {
        "to": TO, "content": "hi", "client_ref": "a b/ü&c=d", "dlr": True, "dlr-level": 1,
        "dlr-method": "GET", "dlr-url": f"{stack.receiver_url}/get?tenant=a%20b&x=",
    }  # fmt: skip
    message_id = stack.send(body, **auth(key)).json()["id"]

    def arrived() -> Any:
        return next((r for r in stack.receiver.snapshot() if message_id in r.query), None)

    found = wait_for(arrived, 30, "no GET receipt arrived")
    assert found.method == "GET"
    assert found.query.startswith("tenant=a%20b&x=&")
    return key.webhook_secret, found


class TestVerifyingGetReceipts:
    """The snippets docs/security.md shows for GET receipts, run against real ones."""

    def test_the_stdlib_snippet_verifies_and_refuses_tampering(
        self, get_receipt: tuple[str, Any]
    ) -> None:
        """`verify_get_receipt` accepts the receipt as sent and refuses a changed query, a
        changed id or another secret."""
        secret, received = get_receipt
        namespace: dict[str, Any] = {}
        exec(doc_snippet("verify-get-receipt"), namespace)
        verify = namespace["verify_get_receipt"]
        assert verify(secret, received.query, received.headers)
        assert not verify(secret, received.query.replace("accepted", "delivered"), received.headers)
        assert not verify(secret, received.query, received.headers | {"webhook-id": "evt_x"})
        assert not verify(generate_secret(), received.query, received.headers)

    def test_the_standardwebhooks_snippet_verifies_and_refuses_tampering(
        self, get_receipt: tuple[str, Any]
    ) -> None:
        """`Webhook(secret).verify(raw_query, headers, json_parse=False)` passes on the receipt
        and raises on a changed query."""
        secret, received = get_receipt
        snippet = doc_snippet("verify-get-receipt-standardwebhooks")
        exec(snippet, {"secret": secret, "raw_query": received.query, "headers": received.headers})
        tampered = received.query.replace("level=1", "level=2")
        with pytest.raises(WebhookVerificationError):
            exec(snippet, {"secret": secret, "raw_query": tampered, "headers": received.headers})
