"""The receipt client and channels: encoding, signing, outcome mapping, pinning, keep-alive, the
hard deadline, and real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from worker.errors import (
    UnsafeUrlError,
    WebhookError,
    WebhookGoneError,
    WebhookRejectedError,
    WebhookUnavailableError,
)
from worker.receipts.channels import channel_for, flatten_query
from worker.receipts.client import PoolKey, ReceiptClient
from worker.ssrf import parse_denied, parse_networks
from worker.webhooks import generate_secret

PUBLIC_V4 = "93.184.215.14"
LOOPBACK = parse_networks(["127.0.0.0/8"])
SECRET = generate_secret()
PAYLOAD: dict[str, object] = {
    "id": "msg_1",
    "level": 2,
    "status": "delivered",
    "to": "+447700900123",
    "client_ref": None,
    "segments": {"total": 2, "accepted": 2, "delivered": 2, "failed": 0},
    "error": None,
    "final": True,
}


def public_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    """Resolve every name to one public address."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, port))]


def loopback_resolver(host: str, port: int) -> list[tuple[Any, ...]]:
    """Resolve every name to 127.0.0.1."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def deliver(
    url: str,
    method: Literal["GET", "POST"] = "POST",
    *,
    payload: dict[str, object] = PAYLOAD,
    secrets: tuple[str, ...] = (SECRET,),
    event_id: str = "evt_1",
    timestamp: int | None = None,
    times: int = 1,
    **settings: Any,
) -> int:
    """Send `payload` through a fresh client (`times` times, on one client); the last status."""

    async def run() -> int:
        client = ReceiptClient(**settings)
        try:
            status = 0
            for _ in range(times):
                outgoing = channel_for(method).encode(url, [payload], event_id)
                status = await client.send(outgoing, secrets, timestamp=timestamp)
            return status
        finally:
            await client.aclose()

    return asyncio.run(run())


def mocked(
    handler: Callable[[httpx.Request], httpx.Response], **settings: Any
) -> tuple[dict[str, Any], list[httpx.Request]]:
    """Client settings whose network is `handler`, and the requests that reach it."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return handler(request)

    settings.setdefault("resolver", public_resolver)
    settings["transport_factory"] = lambda key: httpx.MockTransport(record)
    return settings, seen


def answer(status: int, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    """A mock handler answering `status` with `headers`."""
    return lambda request: httpx.Response(status, headers=headers)


class TestFlattenQuery:
    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            ({"id": "m", "level": 1}, [("id", "m"), ("level", "1")]),
            (
                {"segments": {"total": 3, "failed": 0}},
                [("segments_total", "3"), ("segments_failed", "0")],
            ),
            (
                {"error": {"code": "E1", "message": "no route"}},
                [("error_code", "E1"), ("error_message", "no route")],
            ),
            ({"error": None, "client_ref": None}, []),
            ({"error": {"code": None, "message": "x"}}, [("error_message", "x")]),
            ({"final": True, "retry": False}, [("final", "true"), ("retry", "false")]),
            ({"client_ref": ""}, [("client_ref", "")]),
            ({"price": 0.5}, [("price", "0.5")]),
        ],
    )
    def test_flattens_scalars(
        self, payload: dict[str, object], expected: list[tuple[str, str]]
    ) -> None:
        """Flattens one level with `_`, omits None, writes booleans as in JSON."""
        assert flatten_query(payload) == expected

    def test_refuses_non_scalars(self) -> None:
        """Refuses lists and deeper nesting rather than guessing an encoding."""
        with pytest.raises(TypeError, match="not a scalar"):
            flatten_query({"segments": {"ids": [1, 2]}})


class TestRequests:
    def test_post_sends_compact_signed_json(self) -> None:
        """POSTs compact JSON with a content type and a signature the reference library verifies."""
        settings, seen = mocked(answer(204))
        assert deliver("https://hooks.example.com/dlr", **settings) == 204
        (request,) = seen
        assert request.method == "POST"
        assert request.content == orjson.dumps(PAYLOAD)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == "hooks.example.com"
        assert request.url.host == PUBLIC_V4
        assert Webhook(SECRET).verify(request.content, dict(request.headers)) == PAYLOAD

    def test_get_sends_signed_query_after_existing_query(self) -> None:
        """GETs the flattened fields after the URL's own query, signing the exact query string."""
        settings, seen = mocked(answer(200))
        deliver("https://hooks.example.com/dlr?token=a%20b", "GET", **settings)
        (request,) = seen
        query = request.url.query
        assert query.startswith(b"token=a%20b&id=msg_1&level=2&status=delivered&to=%2B447700900123")
        assert b"segments_total=2" in query
        assert b"client_ref" not in query
        assert b"error" not in query
        assert request.content == b""
        Webhook(SECRET).verify(query, dict(request.headers), json_parse=False)

    def test_uses_given_timestamp_and_event_id(self) -> None:
        """Puts the given event id and timestamp in the signature headers."""
        settings, seen = mocked(answer(200))
        deliver("https://h.example/", payload={}, event_id="evt_7", timestamp=42, **settings)
        assert seen[0].headers["webhook-id"] == "evt_7"
        assert seen[0].headers["webhook-timestamp"] == "42"

    def test_signs_with_every_secret_during_rotation(self) -> None:
        """Signs with both secrets so either verifies during rotation."""
        old, new = generate_secret(), generate_secret()
        settings, seen = mocked(answer(200))
        deliver("https://h.example/", secrets=(old, new), **settings)
        for secret in (old, new):
            Webhook(secret).verify(seen[0].content, dict(seen[0].headers))

    def test_a_batch_is_one_signed_post_of_receipts(self) -> None:
        """A `dlr-batch` channel POSTs `{"receipts": [...]}` signed as a whole under its id."""
        settings, seen = mocked(answer(200))

        async def run() -> int:
            client = ReceiptClient(**settings)
            outgoing = channel_for("post", batch=True).encode(
                "https://h.example/", [PAYLOAD, PAYLOAD], "batch_1"
            )
            try:
                return await client.send(outgoing, (SECRET,))
            finally:
                await client.aclose()

        assert asyncio.run(run()) == 200
        verified = Webhook(SECRET).verify(seen[0].content, dict(seen[0].headers))
        assert verified == {"receipts": [PAYLOAD, PAYLOAD]}
        assert seen[0].headers["webhook-id"] == "batch_1"

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/dlr",
            "http://[::1]/",
            "ftp://hooks.example.com/",
            "https://u:p@h.example/",
        ],
    )
    def test_refuses_unsafe_urls_before_sending(self, url: str) -> None:
        """Refuses an unsafe URL without any request leaving."""
        settings, seen = mocked(answer(200))
        with pytest.raises(UnsafeUrlError):
            deliver(url, **settings)
        assert seen == []

    def test_refuses_hostname_resolving_to_private_address(self) -> None:
        """Refuses a hostname that resolves to loopback at send time."""
        settings, seen = mocked(answer(200), resolver=loopback_resolver)
        with pytest.raises(UnsafeUrlError, match="loopback"):
            deliver("https://hooks.example.com/dlr", **settings)
        assert seen == []

    def test_dns_rebinding_is_pinned(self) -> None:
        """Connects to the first validated answer; a later loopback answer is never used."""
        rounds = iter([public_resolver, loopback_resolver])

        def rebinding(host: str, port: int) -> list[tuple[Any, ...]]:
            return next(rounds)(host, port)

        settings, seen = mocked(answer(200), resolver=rebinding)
        deliver("https://rebind.example/dlr", **settings)
        assert [request.url.host for request in seen] == [PUBLIC_V4]
        assert seen[0].extensions["sni_hostname"] == "rebind.example"

    def test_pools_are_kept_per_hostname_and_address(self) -> None:
        """Two hostnames on one address get two pools (a TLS connection verified for one
        hostname never carries the other's requests); one hostname reuses its pool."""
        keys: list[PoolKey] = []

        def factory(key: PoolKey) -> httpx.AsyncBaseTransport:
            keys.append(key)
            return httpx.MockTransport(answer(200))

        async def run() -> None:
            client = ReceiptClient(resolver=public_resolver, transport_factory=factory)
            try:
                for url in ("https://a.example/1", "https://a.example/2", "https://b.example/"):
                    await client.send(channel_for("POST").encode(url, [PAYLOAD], "e"), (SECRET,))
            finally:
                await client.aclose()

        asyncio.run(run())
        assert keys == [
            PoolKey("https", "a.example", 443, PUBLIC_V4),
            PoolKey("https", "b.example", 443, PUBLIC_V4),
        ]

    def test_reads_at_most_the_response_cap(self) -> None:
        """Stops reading an endless response body at the size cap and closes it."""
        stream = EndlessStream()
        settings, _ = mocked(
            lambda request: httpx.Response(200, stream=stream), max_response_bytes=10_000
        )
        assert deliver("https://h.example/", **settings) == 200
        assert stream.sent <= 10_000 + EndlessStream.CHUNK
        assert stream.closed


class EndlessStream(httpx.AsyncByteStream):
    """A response body that never ends, counting what was read."""

    CHUNK = 1024

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += self.CHUNK
            yield b"x" * self.CHUNK

    async def aclose(self) -> None:
        self.closed = True


class TestOutcomes:
    @pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
    def test_2xx_returns_status(self, status: int) -> None:
        """Returns the status code of any 2xx answer."""
        settings, _ = mocked(answer(status))
        assert deliver("https://h.example/", **settings) == status

    @pytest.mark.parametrize(
        ("status", "headers", "error", "retry_after"),
        [
            (410, {}, WebhookGoneError, None),
            (429, {"retry-after": "30"}, WebhookUnavailableError, 30.0),
            (500, {}, WebhookUnavailableError, None),
            (503, {"retry-after": "7"}, WebhookUnavailableError, 7.0),
            (503, {"retry-after": "7200"}, WebhookUnavailableError, 7200.0),
            (504, {"retry-after": "later"}, WebhookUnavailableError, None),
            (301, {"location": "http://127.0.0.1/"}, WebhookRejectedError, None),
            (302, {"location": "http://169.254.169.254/"}, WebhookRejectedError, None),
            (307, {"location": "https://h.example/x"}, WebhookRejectedError, None),
            (400, {}, WebhookRejectedError, None),
            (401, {}, WebhookRejectedError, None),
            (404, {}, WebhookRejectedError, None),
            (413, {}, WebhookRejectedError, None),
        ],
    )
    def test_maps_status_to_error(
        self,
        status: int,
        headers: dict[str, str],
        error: type[WebhookError],
        retry_after: float | None,
    ) -> None:
        """Maps 410 to Gone, 429/5xx to Unavailable with Retry-After, 3xx/4xx to Rejected."""
        settings, seen = mocked(answer(status, headers))
        with pytest.raises(error) as caught:
            deliver("https://h.example/", **settings)
        assert type(caught.value) is error
        assert caught.value.status_code == status
        assert caught.value.retry_after == retry_after
        assert f"HTTP {status}" in str(caught.value)
        assert len(seen) == 1  # a redirect is never followed

    @pytest.mark.parametrize(
        "exc",
        [
            httpx.ConnectTimeout("connect timed out"),
            httpx.ReadTimeout("read timed out"),
            httpx.WriteTimeout("write timed out"),
            httpx.PoolTimeout("pool timed out"),
            httpx.ConnectError("connection refused"),
            httpx.ReadError("connection reset"),
            httpx.RemoteProtocolError("server disconnected"),
        ],
    )
    def test_maps_network_errors_to_unavailable(self, exc: httpx.TransportError) -> None:
        """Maps timeouts and network errors to Unavailable; no httpx exception escapes."""

        def fail(request: httpx.Request) -> httpx.Response:
            raise exc

        settings, _ = mocked(fail)
        with pytest.raises(WebhookUnavailableError) as caught:
            deliver("https://h.example/", **settings)
        assert caught.value.__cause__ is exc


class Receiver(BaseHTTPRequestHandler):
    """A loopback HTTP endpoint that records every request and answers by path."""

    protocol_version = "HTTP/1.1"  # keep-alive
    requests: ClassVar[list[dict[str, Any]]]
    redirect_to: ClassVar[str] = ""
    release: ClassVar[threading.Event]

    def log_message(self, format: str, *args: Any) -> None:
        """Keeps test output quiet."""

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers),
             "body": body, "peer": self.client_address}
        )  # fmt: skip
        route = self.path.split("?", 1)[0]
        if route == "/redirect":
            self._reply(302, {"Location": self.redirect_to})
        elif route == "/gone":
            self._reply(410)
        elif route == "/busy":
            self._reply(503, {"Retry-After": "7"})
        elif route == "/slow":
            self.release.wait(5)
        elif route == "/huge":
            self._reply_huge()
        else:
            self._reply(204)

    do_GET = do_POST = _handle  # noqa: N815 - the names http.server dispatches to

    def _reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _reply_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(100 * 1024 * 1024))
        self.end_headers()
        chunk = b"x" * 65_536
        try:
            for _ in range(1600):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should


Serve = Callable[..., tuple[str, list[dict[str, Any]]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start loopback servers on free ports; yield a factory returning (base URL, requests)."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
    release = threading.Event()

    def start(redirect_to: str = "") -> tuple[str, list[dict[str, Any]]]:
        requests: list[dict[str, Any]] = []
        attributes = {"requests": requests, "release": release, "redirect_to": redirect_to}
        handler = type("BoundReceiver", (Receiver,), attributes)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", requests

    yield start
    release.set()
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join()


class TestOverHttp:
    def test_post_arrives_signed(self, serve: Serve) -> None:
        """Delivers a POST receipt whose signature the reference library verifies."""
        base, requests = serve()
        assert deliver(f"{base}/ok", allow_private=LOOPBACK) == 204
        (request,) = requests
        assert json.loads(request["body"]) == PAYLOAD
        assert Webhook(SECRET).verify(request["body"], request["headers"]) == PAYLOAD

    def test_get_arrives_signed(self, serve: Serve) -> None:
        """Delivers a GET receipt whose query string verifies as the signed payload."""
        base, requests = serve()
        assert deliver(f"{base}/ok?t=1", "GET", allow_private=LOOPBACK) == 204
        (request,) = requests
        query = request["path"].split("?", 1)[1]
        assert query.startswith("t=1&id=msg_1&")
        Webhook(SECRET).verify(query, request["headers"], json_parse=False)

    def test_connections_are_kept_alive(self, serve: Serve) -> None:
        """Several receipts to one endpoint travel over one kept-alive connection."""
        base, requests = serve()
        deliver(f"{base}/ok", allow_private=LOOPBACK, times=5)
        assert len(requests) == 5
        assert len({request["peer"] for request in requests}) == 1

    def test_hostname_is_pinned_to_checked_address(self, serve: Serve) -> None:
        """Connects to the resolved address while the Host header keeps the hostname."""
        base, requests = serve()
        port = base.rsplit(":", 1)[1]
        deliver(f"http://receipts.test:{port}/ok", allow_private=LOOPBACK,
                resolver=loopback_resolver)  # fmt: skip
        headers = {name.lower(): value for name, value in requests[0]["headers"].items()}
        assert headers["host"] == f"receipts.test:{port}"

    def test_a_name_resolving_to_a_denied_port_is_refused(self, serve: Serve) -> None:
        """A hostname that resolves to an allow-listed address at a denied port (smsq's own
        services under `smsq up`) is refused at send time, before any request."""
        base, requests = serve()
        port = base.rsplit(":", 1)[1]
        with pytest.raises(UnsafeUrlError):
            deliver(
                f"http://receipts.test:{port}/ok",
                allow_private=LOOPBACK,
                deny=parse_denied([f"127.0.0.1:{port}"]),
                resolver=loopback_resolver,
            )
        assert requests == []

    def test_redirect_is_not_followed(self, serve: Serve) -> None:
        """Rejects a 302 to another internal address without the target seeing any request."""
        target, target_requests = serve()
        base, requests = serve(redirect_to=f"{target}/internal")
        with pytest.raises(WebhookRejectedError) as caught:
            deliver(f"{base}/redirect", allow_private=LOOPBACK)
        assert caught.value.status_code == 302
        assert len(requests) == 1
        assert target_requests == []

    def test_gone(self, serve: Serve) -> None:
        """Raises Gone on 410."""
        base, _ = serve()
        with pytest.raises(WebhookGoneError):
            deliver(f"{base}/gone", allow_private=LOOPBACK)

    def test_unavailable_with_retry_after(self, serve: Serve) -> None:
        """Raises Unavailable carrying Retry-After on 503."""
        base, _ = serve()
        with pytest.raises(WebhookUnavailableError) as caught:
            deliver(f"{base}/busy", allow_private=LOOPBACK)
        assert (caught.value.status_code, caught.value.retry_after) == (503, 7.0)

    def test_huge_body_is_capped(self, serve: Serve) -> None:
        """Returns after reading at most the cap of a 100 MiB answer."""
        base, _ = serve()
        assert deliver(f"{base}/huge", allow_private=LOOPBACK, max_response_bytes=65_536) == 200

    def test_no_answer_within_the_deadline_is_unavailable(self, serve: Serve) -> None:
        """Raises Unavailable, naming the deadline, when the endpoint does not answer."""
        base, _ = serve()
        with pytest.raises(WebhookUnavailableError, match=r"timeout after 0\.3 s"):
            deliver(f"{base}/slow", allow_private=LOOPBACK, deadline=0.3)

    def test_a_dribbling_endpoint_meets_the_deadline(self) -> None:
        """An endpoint sending its status line a byte at a time (each read succeeds) is cut
        off at the whole-attempt deadline, not kept as long as it dribbles."""
        with dribbler() as port, pytest.raises(WebhookUnavailableError, match="timeout after 1 s"):
            deliver(f"http://127.0.0.1:{port}/", allow_private=LOOPBACK, deadline=1.0)

    def test_connection_refused_is_unavailable(self) -> None:
        """Raises Unavailable saying so when nothing listens on the port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(WebhookUnavailableError, match="refused"):
            deliver(f"http://127.0.0.1:{port}/ok", allow_private=LOOPBACK)

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
    def test_loopback_refused_without_allowlist(self, serve: Serve, host: str) -> None:
        """Refuses the loopback server before connecting when nothing is allowlisted."""
        base, requests = serve()
        port = base.rsplit(":", 1)[1]
        with pytest.raises(UnsafeUrlError, match="loopback"):
            deliver(f"http://{host}:{port}/ok")
        assert requests == []


@contextmanager
def dribbler() -> Iterator[int]:
    """A server that answers `HTTP/1.1 200 OK` then one byte every 0.1 s, for 10 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_one() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(65_536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):
                if stop.wait(0.1):
                    return
                try:
                    connection.sendall(b"X")
                except OSError:
                    return

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join()
