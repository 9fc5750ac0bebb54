"""The API process bounds slow and numerous clients, and can keep /metrics behind a token.

Real sockets against a real `python -m producer.server` process (what `smsq up` runs).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.api_process import api_process, processes_command
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

# Generous: the test waits for the server to act, it does not time it.
SOCKET_TIMEOUT = 30.0
METRICS_TOKEN = "scrape-token-0123456789abcdef"


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a socket timeout fails the test."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def settings_env(**settings: str) -> dict[str, str]:
    return {f"SMSQ_{name.upper()}": value for name, value in settings.items()}


@pytest.fixture(scope="module")
def api(redis_server_url: str) -> Iterator[str]:
    """A short header timeout, /metrics behind a token."""
    env = settings_env(
        redis_url=redis_server_url, api_header_timeout="1", metrics_token=METRICS_TOKEN
    )
    with api_process(env) as url:
        yield url


@pytest.fixture(scope="module")
def small_api(redis_server_url: str) -> Iterator[str]:
    """Four connections at most; idle ones are held long enough to count them."""
    env = settings_env(
        redis_url=redis_server_url, api_header_timeout="300", api_max_connections="4"
    )
    with api_process(env) as url:
        yield url


@pytest.fixture(scope="module")
def processes_api(redis_server_url: str) -> Iterator[str]:
    """`python -m producer.api --processes 2` (compose's form) with a short header timeout."""
    env = settings_env(redis_url=redis_server_url, api_header_timeout="1")
    with api_process(env, processes_command) as url:
        yield url


class TestSeveralProcessesForm:
    def test_every_process_answers_unfinished_headers_408(self, processes_api: str) -> None:
        """Compose's form keeps the header timeout in each of its processes (uvicorn's own
        worker processes): several slow connections, each answered 408 and closed."""
        for _ in range(4):  # each connection goes to either process
            with connect(processes_api) as sock:
                sock.sendall(b"POST /sms/se")
                answer = read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert httpx.get(f"{processes_api}/healthz", timeout=10).status_code == 200


class TestSlowClients:
    @pytest.mark.parametrize(
        "sent", [b"POST /sms/se", b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"], ids=repr
    )
    def test_unfinished_headers_are_answered_408_and_closed(self, api: str, sent: bytes) -> None:
        """Half a request line, nothing at all, or headers without their end: the server
        answers 408 and closes the connection once the header timeout passes."""
        with connect(api) as sock:
            sock.sendall(sent)
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")

    def test_a_kept_alive_connection_gets_the_deadline_again(self, api: str) -> None:
        """After a complete request, the next one on the same connection has its own deadline:
        the first is answered, the unfinished second gets 408."""
        with connect(api) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /heal")
            answer = read_until_closed(sock)
        first, _, rest = answer.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200 OK")
        assert b"HTTP/1.1 408 Request Timeout" in rest

    def test_a_complete_request_is_served(self, api: str) -> None:
        """Well-behaved clients see nothing of it."""
        assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}


class TestConcurrencyLimit:
    def test_requests_beyond_the_limit_get_503_until_connections_go(self, small_api: str) -> None:
        """With SMSQ_API_MAX_CONNECTIONS=4, three idle connections plus this request's make
        four: 503 at once; once the idle ones are gone, 200 again."""
        assert httpx.get(f"{small_api}/healthz").status_code == 200
        with ExitStack() as idle:
            for _ in range(3):
                idle.enter_context(connect(small_api))
            wait_for(
                lambda: httpx.get(f"{small_api}/healthz").status_code == 503,
                30,
                "the API kept answering beyond its connection limit",
            )
        wait_for(
            lambda: httpx.get(f"{small_api}/healthz").status_code == 200,
            30,
            "the API still refuses after the idle connections closed",
        )


class TestMetricsToken:
    def test_metrics_wants_the_token(self, api: str) -> None:
        """With SMSQ_METRICS_TOKEN set: 401 without it or with a wrong one, 200 with it."""
        assert httpx.get(f"{api}/metrics").status_code == 401
        wrong = httpx.get(f"{api}/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        right = httpx.get(f"{api}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert right.status_code == 200
        assert "smsq_queue_depth" in right.text

    def test_metrics_is_open_without_a_token_setting(self, small_api: str) -> None:
        """Without SMSQ_METRICS_TOKEN, /metrics needs nothing (a private scrape port)."""
        assert httpx.get(f"{small_api}/metrics").status_code == 200
