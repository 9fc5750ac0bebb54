"""The receipt client alone: CPU per signed receipt request, our HTTP/1.1 pools against httpx.

`python -m bench client [--receipts 5000] [--concurrency 4] [--rounds 3]`

Starts `bench.receiver` on loopback and sends the same signed POST receipts through
`ReceiptClient` twice per round: over its own pools (`worker.http1`, what the engine uses) and
over an httpx transport (the baseline: what receipts went out over before). Prints, per client,
the CPU seconds of this process per 1,000 requests and requests per second, and the ratio of
the two measured in the same round (the machine is shared: compare ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import httpx

from bench.harness import processes, wait_http
from worker.embedded_redis import free_port
from worker.receipts.channels import Outgoing
from worker.receipts.client import PoolKey, ReceiptClient
from worker.ssrf import parse_networks

BODY = b'{"id":"0190c1d2-7e4f-7a55-9c3b-5f9f6a8e1d20","status":"delivered","level":2}'


def outgoing(url: str, number: int) -> Outgoing:
    return Outgoing(
        method="POST", url=httpx.URL(url), body=BODY, signed=BODY, webhook_id=f"msg_{number}",
        headers=(("content-type", "application/json"),),
    )  # fmt: skip


async def send_all(client: ReceiptClient, url: str, count: int, concurrency: int) -> None:
    queue = iter(range(count))

    async def lane() -> None:
        for number in queue:
            await client.send(outgoing(url, number), ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])

    try:
        await asyncio.gather(*(lane() for _ in range(concurrency)))
    finally:
        await client.aclose()


def measure(make: Callable[[], ReceiptClient], url: str, count: int, concurrency: int
            ) -> tuple[float, float]:  # fmt: skip
    """(CPU ms per request, requests per second) of one client sending `count` receipts."""
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(send_all(make(), url, count, concurrency))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1000 * cpu / count, count / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loopback = parse_networks(["127.0.0.0/8"])
    port = free_port()
    url = f"http://127.0.0.1:{port}/r?level=2"

    def ours() -> ReceiptClient:
        return ReceiptClient(allow_private=loopback, pool_size=args.concurrency)

    def httpx_baseline() -> ReceiptClient:
        def transport(_: PoolKey) -> httpx.AsyncBaseTransport:
            limits = httpx.Limits(max_connections=args.concurrency)
            return httpx.AsyncHTTPTransport(limits=limits)

        return ReceiptClient(allow_private=loopback, transport_factory=transport)

    with processes({}) as children:
        children.start("-m", "bench.receiver", str(port))
        wait_http(f"http://127.0.0.1:{port}/count")
        measure(ours, url, 200, args.concurrency)  # warm both up: imports, first connections
        measure(httpx_baseline, url, 200, args.concurrency)
        rows: list[tuple[float, float, float, float]] = []
        for _ in range(args.rounds):
            cpu_ours, rate_ours = measure(ours, url, args.receipts, args.concurrency)
            cpu_httpx, rate_httpx = measure(httpx_baseline, url, args.receipts, args.concurrency)
            rows.append((cpu_ours, rate_ours, cpu_httpx, rate_httpx))
    print(f"{args.receipts:,} signed POST receipts x {args.rounds} rounds, "
          f"{args.concurrency} connections, receiver on loopback")  # fmt: skip
    print(f"{'round':>5} {'ours ms CPU':>12} {'httpx ms CPU':>13} {'ratio':>6} "
          f"{'ours req/s':>11} {'httpx req/s':>12}")  # fmt: skip
    for number, (cpu_ours, rate_ours, cpu_httpx, rate_httpx) in enumerate(rows, 1):
        print(f"{number:>5} {cpu_ours:>12.3f} {cpu_httpx:>13.3f} {cpu_ours / cpu_httpx:>6.2f} "
              f"{rate_ours:>11,.0f} {rate_httpx:>12,.0f}")  # fmt: skip
    ratio = statistics.median(row[0] / row[2] for row in rows)
    print(f"median CPU per request, ours / httpx: {ratio:.2f}")
