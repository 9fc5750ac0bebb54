"""Keys at the API: 401, scopes (403), rate and daily quota (429), cross-key 404, 413, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from producer.api import create_app
from producer.services import Services
from tests.unit.fake_services import fake_services
from worker.keys import CreatedKey
from worker.settings import Settings

TO = "+14155552671"
SEND = {"to": TO, "content": "hi"}


@pytest.fixture
def services() -> Services:
    return fake_services(Settings(max_body_bytes=4096, max_batch_body_bytes=16_384, secret_key="k"))


@pytest.fixture
def app(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services)) as client:
        yield client


def bearer(key: CreatedKey) -> dict[str, str]:
    return {"authorization": f"Bearer {key.api_key}"}


def call(app: TestClient, key: CreatedKey, method: str, path: str, body: Any = None) -> Any:
    return app.request(method, path, json=body, headers=bearer(key))


# (method, path, body, the scope it needs)
ROUTES = [
    ("POST", "/sms/send", SEND, "send"),
    ("POST", "/sms/batch", {"content": "hi", "recipients": [TO]}, "send"),
    ("DELETE", "/sms/0123456789abcdef0123456789abcdef", None, "send"),
    ("DELETE", "/sms/batch/0123456789abcdef0123456789abcdef", None, "send"),
    ("GET", "/sms/0123456789abcdef0123456789abcdef", None, "read"),
    ("GET", "/sms/batch/0123456789abcdef0123456789abcdef", None, "read"),
    ("POST", "/otp/send", {"to": TO}, "otp"),
    ("POST", "/otp/verify", {"id": "0" * 32, "code": "123456"}, "otp"),
    ("GET", "/otp/0123456789abcdef0123456789abcdef", None, "otp"),
]


class TestScopes:
    @pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
    def test_a_key_without_the_scope_is_403(
        self, app: TestClient, services: Services, method: str, path: str, body: Any, scope: str
    ) -> None:
        """Each route refuses a key lacking its scope with a 403 JSON error naming it."""
        others = tuple(s for s in ("send", "otp", "read") if s != scope)
        reply = call(app, services.keys.create("narrow", others), method, path, body)
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "forbidden"
        assert scope in reply.json()["error"]["message"]

    @pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
    def test_a_key_with_only_that_scope_passes(
        self, app: TestClient, services: Services, method: str, path: str, body: Any, scope: str
    ) -> None:
        """The one scope a route needs is enough to get past auth (whatever the route says)."""
        reply = call(app, services.keys.create("exact", (scope,)), method, path, body)
        assert reply.status_code not in (401, 403), reply.text

    def test_missing_key_is_401_before_any_scope(self, app: TestClient) -> None:
        """No key at all is 401 on a scoped route."""
        reply = app.post("/sms/send", json=SEND)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"


class TestRate:
    def test_over_the_rate_is_429_with_retry_after(
        self, app: TestClient, services: Services
    ) -> None:
        """At 1 call/s (burst 1) the second call at once is 429 with Retry-After: 1."""
        key = services.keys.create("slow", rate=1.0, burst=1)
        path = "/sms/0123456789abcdef0123456789abcdef"
        assert call(app, key, "GET", path).status_code == 404
        refused = call(app, key, "GET", path)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limited"

    def test_keys_have_separate_rates(self, app: TestClient, services: Services) -> None:
        """One key at its limit does not slow another."""
        first = services.keys.create("a", rate=1.0, burst=1)
        second = services.keys.create("b", rate=1.0, burst=1)
        assert call(app, first, "POST", "/sms/send", SEND).status_code == 202
        assert call(app, first, "POST", "/sms/send", SEND).status_code == 429
        assert call(app, second, "POST", "/sms/send", SEND).status_code == 202


class TestDailyQuota:
    def test_sends_beyond_the_quota_are_429_until_midnight(
        self, app: TestClient, services: Services
    ) -> None:
        """Two sends pass a quota of 2; the third is 429 with Retry-After up to a day."""
        key = services.keys.create("small", daily=2)
        assert [call(app, key, "POST", "/sms/send", SEND).status_code for _ in range(2)] == [
            202,
            202,
        ]
        refused = call(app, key, "POST", "/sms/send", SEND)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 86_400
        assert "daily quota" in refused.json()["error"]["message"]

    def test_a_batch_counts_its_recipients(self, app: TestClient, services: Services) -> None:
        """A batch of 3 does not fit a quota of 2 (nothing is sent); a batch of 2 does."""
        key = services.keys.create("small", daily=2)
        three = {"content": "hi {to}", "recipients": [TO, "+14155552672", "+14155552673"]}
        refused = call(app, key, "POST", "/sms/batch", three)
        assert refused.status_code == 429
        assert "needs 3 messages" in refused.json()["error"]["message"]
        assert services.redis.keys("smsq:msg:*") == []
        two = {"content": "hi", "messages": [SEND, SEND]}
        assert call(app, key, "POST", "/sms/batch", two).status_code == 202
        assert call(app, key, "POST", "/sms/send", SEND).status_code == 429

    def test_refused_input_gives_its_message_back(
        self, app: TestClient, services: Services
    ) -> None:
        """A 422 costs nothing: with a quota of 1 a valid send still passes after it."""
        key = services.keys.create("one", daily=1)
        bad = call(app, key, "POST", "/sms/send", {"to": "12", "content": "hi"})
        assert bad.status_code == 422
        assert call(app, key, "POST", "/sms/send", SEND).status_code == 202

    def test_reads_do_not_count(self, app: TestClient, services: Services) -> None:
        """Status reads cost no messages."""
        key = services.keys.create("one", daily=1)
        for _ in range(3):
            call(app, key, "GET", "/sms/0123456789abcdef0123456789abcdef")
        assert call(app, key, "POST", "/sms/send", SEND).status_code == 202


class TestCrossKey:
    def test_another_keys_message_and_batch_are_404(
        self, app: TestClient, services: Services
    ) -> None:
        """A message or batch is invisible (404) to every other key, for reading and cancelling."""
        owner, stranger = services.keys.create("owner"), services.keys.create("stranger")
        message_id = call(app, owner, "POST", "/sms/send", SEND).json()["id"]
        batch = {"content": "hi", "recipients": [TO], "send_at": "2099-01-01T00:00:00Z"}
        batch_id = call(app, owner, "POST", "/sms/batch", batch).json()["id"]
        for method, path in [
            ("GET", f"/sms/{message_id}"),
            ("DELETE", f"/sms/{message_id}"),
            ("GET", f"/sms/batch/{batch_id}"),
            ("DELETE", f"/sms/batch/{batch_id}"),
        ]:
            assert call(app, stranger, method, path).status_code == 404, (method, path)
        assert call(app, owner, "GET", f"/sms/{message_id}").status_code == 200


class TestBodySize:
    def test_declared_oversized_body_is_413(self, app: TestClient, services: Services) -> None:
        """A Content-Length over the limit is answered 413 without reading the body."""
        reply = app.post(
            "/sms/send",
            content=b"{" + b" " * 5000 + b"}",
            headers={**bearer(services.keys.create("k")), "content-type": "application/json"},
        )
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "too_large"

    def test_streamed_oversized_body_is_413(self, app: TestClient, services: Services) -> None:
        """A chunked body (no Content-Length) is cut off with 413 once it passes the limit."""

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        reply = app.post(
            "/sms/send",
            content=chunks(),
            headers={**bearer(services.keys.create("k")), "content-type": "application/json"},
        )
        assert reply.status_code == 413

    def test_batches_have_their_own_larger_limit(self, app: TestClient, services: Services) -> None:
        """A batch body above the send limit but within the batch limit is accepted."""
        body = {"content": "hi", "recipients": [TO] * 300}
        reply = call(app, services.keys.create("k"), "POST", "/sms/batch", body)
        assert reply.status_code == 202, reply.text


class TestOpenApi:
    def test_documents_bearer_auth_and_key_errors(self, app: TestClient) -> None:
        """The schema names the bearer scheme; keyed routes list 403 and 429, open ones do not."""
        schema = app.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        send = schema["paths"]["/sms/send"]["post"]
        assert {"401", "403", "429"} <= set(send["responses"])
        assert send["security"] == [{"HTTPBearer": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]
        assert "403" not in schema["paths"]["/metrics"]["get"]["responses"]
