"""`PerThreadClient`: requests built with the shared settings, sent on the thread's own pool."""

from __future__ import annotations

import threading

import httpx

from worker.http_clients import PER_THREAD_CONNECTIONS, PerThreadClient


def test_each_thread_sends_through_its_own_small_client() -> None:
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("x-smsq")))
        return httpx.Response(200, json={"ok": True})

    client = PerThreadClient(
        transport=httpx.MockTransport(answer),
        base_url="http://carrier.test",
        headers={"x-smsq": "1"},
        timeout=httpx.Timeout(2.0),
    )
    inner: list[httpx.Client] = []

    def work() -> None:
        assert client.post("/submit", json={}).json() == {"ok": True}
        assert client.get("/stats").status_code == 200
        inner.append(client._own())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # base URL and headers of the shared settings; one client per thread, each with a small
    # pool; all of them closed with the shared client.
    assert sorted(seen)[0] == ("http://carrier.test/stats", "1")
    assert len(seen) == 6
    assert len({id(c) for c in inner}) == 3
    client.close()
    assert all(c.is_closed for c in inner)
    assert client.is_closed


def test_a_thread_pool_holds_a_few_connections() -> None:
    """The point of it: each pool is small, so httpcore's per-request scan is short."""
    with PerThreadClient(timeout=httpx.Timeout(1.0)) as client:
        pool = client._own()._transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections == PER_THREAD_CONNECTIONS
        assert pool._max_keepalive_connections == PER_THREAD_CONNECTIONS
