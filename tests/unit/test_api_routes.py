"""The API's shape: nothing blocks the loop, wrong methods and content types say what is right,
trailing slashes, receipts asked by URL alone, numbers in the user's terms, docs offline."""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from producer.api import ASYNC_ALLOWED, create_app, listening_socket
from producer.routes import all_routes
from producer.services import Services
from tests.unit.fake_services import fake_services, keyed_client
from worker.settings import Settings

TO = "+14155552671"
MESSAGE_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def services() -> Services:
    return fake_services(Settings(secret_key="unit-test-server-key"))


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    with keyed_client(services) as client:
        yield client


def qualified(call: Callable[..., Any]) -> str:
    target = call if inspect.isroutine(call) else type(call).__call__
    return f"{target.__module__}.{target.__qualname__}"


def is_async(call: Callable[..., Any]) -> bool:
    target = call if inspect.isroutine(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def callables(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from callables(sub)


def app_callables() -> set[str]:
    """Every `async def` endpoint and dependency the app runs, by qualified name."""
    app = create_app(services=fake_services())
    found: set[str] = set()
    for route in all_routes(app.routes):
        if isinstance(route, APIRoute):
            calls = list(callables(route.dependant))
        elif isinstance(route, Route):
            calls = [route.endpoint]
        else:
            assert isinstance(route, Mount), route  # the docs' static files
            continue
        found |= {qualified(c) for c in calls if is_async(c)}
    return found


class TestNothingBlocksTheLoop:
    def test_every_async_endpoint_and_dependency_is_allowed(self) -> None:
        """An `async def` route or dependency not on the reviewed list fails the build."""
        unexpected = app_callables() - set(ASYNC_ALLOWED)
        assert not unexpected, f"async def that may block the loop: {sorted(unexpected)}"

    def test_the_allow_list_names_only_what_exists(self) -> None:
        """No stale entries: each allowed name is one the app runs."""
        assert set(ASYNC_ALLOWED) - app_callables() == set()

    def test_the_routes_that_touch_redis_are_plain_functions(self) -> None:
        """Reads and cancels are sync `def` (FastAPI runs them in its thread pool)."""
        app = create_app(services=fake_services())
        plain = {
            (r.path, m)
            for r in all_routes(app.routes)
            if isinstance(r, APIRoute) and not is_async(r.endpoint)
            for m in r.methods or ()
        }
        for path, method in [
            ("/sms/{message_id:id}", "GET"),
            ("/sms/{message_id:id}", "DELETE"),
            ("/sms", "GET"),
            ("/otp/send", "POST"),
            ("/otp/verify", "POST"),
        ]:
            assert (path, method) in plain


class TestWrongMethod:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", "/sms/send", "POST"),
            ("PUT", "/sms/send", "POST"),
            ("GET", "/otp/send", "POST"),
            ("DELETE", "/sms/batch", "POST"),
            ("POST", f"/sms/{MESSAGE_ID}", "GET, DELETE"),
        ],
    )
    def test_a_known_path_answers_405_naming_the_method(
        self, api: TestClient, method: str, path: str, allowed: str
    ) -> None:
        """`GET /sms/send?to=…` is 405 with `Allow`, not a 404 for a message called `send`."""
        reply = api.request(method, path)
        assert reply.status_code == 405
        assert set(reply.headers["allow"].split(", ")) >= set(allowed.split(", "))
        error = reply.json()["error"]
        assert error["code"] == "method_not_allowed"
        assert f"{method} is not allowed on {path}: use" in error["message"]
        assert allowed.split(", ")[0] in error["message"]


class TestContentType:
    def test_a_form_body_is_415_naming_json(self, api: TestClient) -> None:
        """Form fields (curl -d) are refused with 415 naming application/json."""
        reply = api.post("/sms/send", data={"to": TO, "content": "hi"})
        assert reply.status_code == 415
        error = reply.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert "application/json" in error["message"]

    @pytest.mark.parametrize("path", ["/sms/batch", "/otp/send", "/otp/verify"])
    def test_every_json_route_says_so(self, api: TestClient, path: str) -> None:
        """The other JSON routes refuse a text body the same way."""
        reply = api.post(path, content=b"to=1", headers={"content-type": "text/plain"})
        assert reply.status_code == 415

    def test_json_with_a_charset_and_no_content_type_are_read(self, api: TestClient) -> None:
        """`application/json; charset=utf-8`, and a body without a content type, are JSON."""
        body = b'{"to": "+14155552671", "content": "hi"}'
        typed = api.post(
            "/sms/send", content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        assert typed.status_code == 202
        untyped = api.post("/sms/send", content=body, headers={"content-type": ""})
        assert untyped.status_code == 202


class TestTrailingSlash:
    def test_a_trailing_slash_is_the_same_route(self, api: TestClient) -> None:
        """`POST /sms/send/` sends (no empty 307 the client would not follow)."""
        reply = api.post("/sms/send/", json={"to": TO, "content": "hi"}, follow_redirects=False)
        assert reply.status_code == 202
        assert api.get("/healthz/", follow_redirects=False).status_code == 200

    def test_an_unknown_path_is_a_json_404(self, api: TestClient) -> None:
        """A path we do not serve answers JSON, slash or not."""
        reply = api.get("/nope/", follow_redirects=False)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"


class TestReceiptsAskedByUrl:
    URL = "https://example.com/receipts"

    @pytest.mark.parametrize(
        ("extra", "stored"),
        [({}, "1"), ({"dlr": False}, None), ({"dlr": True}, "1")],
    )
    def test_a_dlr_url_alone_asks_for_receipts(
        self, api: TestClient, services: Services, extra: dict[str, Any], stored: str | None
    ) -> None:
        """`dlr-url` implies `dlr: true` unless `"dlr": false` is given."""
        body = {"to": TO, "content": "hi", "dlr-url": self.URL, **extra}
        reply = api.post("/sms/send", json=body)
        assert reply.status_code == 202, reply.text
        assert services.store.fields(reply.json()["id"]).get("dlr") == stored

    def test_a_batch_dlr_url_asks_for_receipts_too(
        self, api: TestClient, services: Services
    ) -> None:
        """The same holds for a batch-wide `dlr-url`."""
        body = {"content": "hi", "recipients": [TO], "dlr-url": self.URL}
        reply = api.post("/sms/batch", json=body)
        assert reply.status_code == 202, reply.text
        (message_id,) = services.redis.lrange(f"smsq:batch:{reply.json()['id']}:ids", 0, -1)
        assert services.store.fields(str(message_id))["dlr"] == "1"

    @pytest.mark.parametrize("method", ["get", "Get", "post"])
    def test_dlr_method_in_any_case(self, api: TestClient, services: Services, method: str) -> None:
        """`"dlr-method": "get"` is GET."""
        body = {"to": TO, "content": "hi", "dlr-url": self.URL, "dlr-method": method}
        reply = api.post("/sms/send", json=body)
        assert reply.status_code == 202, reply.text
        stored = services.store.fields(reply.json()["id"]).get("dlr_method", "POST")
        assert stored == method.upper()


class TestNumbersInTheUsersTerms:
    def test_a_leading_00_is_read_as_plus(self, api: TestClient) -> None:
        """`0044 7911 123456` is `+447911123456`, as dialled from most of the world."""
        reply = api.post("/sms/send", json={"to": "0044 7911 123456", "content": "hi"})
        assert reply.status_code == 202, reply.text
        assert reply.json()["to"] == "+447911123456"

    @pytest.mark.parametrize("to", ["0044", "00", "+", "abc", "++44"])
    def test_errors_never_speak_of_a_plus_sign_the_user_did_not_type(
        self, api: TestClient, to: str
    ) -> None:
        """The error names the field and the format, not phonenumbers' internals."""
        reply = api.post("/sms/send", json={"to": to, "content": "hi"})
        assert reply.status_code == 422
        error = reply.json()["error"]
        assert error["field"] == "to"
        assert "plus-sign" not in error["message"]
        assert "international format" in error["message"]
        assert error["message"].startswith("to ")


class TestOfflineDocs:
    def test_docs_load_nothing_from_another_host(self, api: TestClient) -> None:
        """/docs and /redoc reference only the API's own paths, and those paths answer."""
        for page in ("/docs", "/redoc"):
            html = api.get(page).text
            assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", html), page
            assets = re.findall(r"(?:src|href)=[\"'](/[^\"']+)", html)
            assert assets, page
            for asset in assets:
                assert api.get(asset).status_code == 200, asset
            assert "cdn.jsdelivr" not in html
            assert "fonts.googleapis" not in html


class TestListeningSocket:
    def test_the_socket_says_tcp_so_connections_get_no_delay(self) -> None:
        """Bound as IPPROTO_TCP: asyncio sets TCP_NODELAY on what it accepts (uvicorn's own
        `--workers` socket says proto 0, and every keep-alive request waits ~40 ms)."""
        sock = listening_socket("127.0.0.1", 0)
        try:
            assert sock.proto == socket.IPPROTO_TCP
            assert sock.get_inheritable()
        finally:
            sock.close()
