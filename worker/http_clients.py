"""An `httpx.Client` that sends through one small client per thread.

httpcore's connection pool looks at every pooled connection on every request and every
response close (is it idle, has it expired: a `poll` each). With a threads-pool worker of 64
threads sharing one pool of 128 connections, that bookkeeping was about half of the send
worker's CPU (py-spy, bench e2e). Each thread of a worker runs one task at a time, so a
client per thread with a pool of a few connections keeps every request's pool work O(1)
while each thread still reuses its keep-alive connection to the carrier.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

PER_THREAD_CONNECTIONS = 4  # one carrier host is one connection; routes with failover a few


class PerThreadClient(httpx.Client):
    """Builds requests like any `httpx.Client` (its base URL, headers, timeouts) and sends
    each through the calling thread's own client, made with the same settings."""

    def __init__(self, **settings: Any) -> None:
        settings.pop("limits", None)
        super().__init__(**settings)
        self._settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []

    def _own(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            limits = httpx.Limits(
                max_connections=PER_THREAD_CONNECTIONS,
                max_keepalive_connections=PER_THREAD_CONNECTIONS,
            )
            client = httpx.Client(limits=limits, **self._settings)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        return self._own().send(
            request, stream=stream, auth=auth, follow_redirects=follow_redirects
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        super().close()
