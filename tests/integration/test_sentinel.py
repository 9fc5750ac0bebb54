"""Redis Sentinel (docs/operations.md): the system on `SMSQ_REDIS_URL=sentinel://...`, all real.

A Valkey primary (`EmbeddedRedis`) and a real Sentinel started from the same pip-installed
binary (`valkey-server sentinel.conf --sentinel`); the system runs through `running_stack` with
the sentinel URL, so the API, the Celery worker subprocess (kombu's sentinel transport) and the
scheduler all find the primary through the sentinel. A forced failover shows that a client
follows the new primary.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.stack import Stack, running_stack, wait_for
from worker.embedded_redis import EmbeddedRedis, free_port, server_binary
from worker.redis_urls import connect

pytestmark = pytest.mark.integration

SERVICE = "mymaster"
TO = "+14155552671"


@dataclass
class SentinelProcess:
    """One real sentinel monitoring `SERVICE`."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}/{SERVICE}"

    def master_address(self) -> tuple[str, int] | None:
        client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)
        try:
            reply: Any = client.sentinel_get_master_addr_by_name(SERVICE)
        except redis.ConnectionError:
            return None
        finally:
            client.close()
        return (str(reply[0]), int(reply[1])) if reply else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_sentinel(directory: Path, primary_port: int) -> SentinelProcess:
    """A sentinel for the primary on `primary_port`, answering once it knows the primary."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory.resolve()}\n"
        f"logfile {(directory / 'sentinel.log').resolve()}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 2000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )
    process = subprocess.Popen(
        [str(server_binary()), str(conf), "--sentinel"], stdin=subprocess.DEVNULL
    )
    sentinel = SentinelProcess(process, port)
    try:
        wait_for(
            lambda: process.poll() is not None or sentinel.master_address(),
            15,
            "the sentinel never answered get-master-addr-by-name",
        )
        if process.poll() is not None:
            raise RuntimeError(f"sentinel exited with {process.returncode}")
    except BaseException:
        sentinel.stop()
        raise
    return sentinel


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    # No password: the sentinel and the replica would need it too, which is not what this tests.
    server = EmbeddedRedis(tmp_path_factory.mktemp("primary"), appendonly=False, password="")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sentinel(primary: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sentinel URL of `primary`."""
    process = start_sentinel(tmp_path_factory.mktemp("sentinel"), primary.port)
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture
def clean_primary(primary: EmbeddedRedis) -> EmbeddedRedis:
    client = redis.Redis(port=primary.port)
    client.flushdb()
    client.close()
    return primary


def send_with_receipts(stack: Stack, count: int) -> None:
    """Send `count` messages with level-1 receipts; all are delivered, every receipt arrives."""
    ids = []
    for n in range(count):
        reply = stack.send(
            {
                "to": TO,
                "content": f"sentinel {n}",
                "dlr": True,
                "dlr-level": 1,
                "dlr-url": f"{stack.receiver_url}/receipts",
            }
        )
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["id"])
    for message_id in ids:
        stack.wait_status(message_id, {"delivered"}, timeout=30)

    def receipts() -> list[dict[str, Any]] | None:
        found = [r.json() for r in stack.receiver.snapshot() if r.method == "POST"]
        return found if {r["id"] for r in found} >= set(ids) else None

    arrived: list[dict[str, Any]] = wait_for(receipts, 30, "not every receipt arrived")
    mine = [r for r in arrived if r["id"] in ids]
    assert len(mine) == count  # exactly one (level 1) per message
    assert {(str(r["level"]), r["status"]) for r in mine} == {("1", "accepted")}


def test_sentinel_client_reaches_the_primary(sentinel: str, clean_primary: EmbeddedRedis) -> None:
    """`connect` asks the sentinel for the primary: a write lands on the primary itself."""
    client = connect(sentinel, decode_responses=True)
    direct = redis.Redis(port=clean_primary.port, decode_responses=True)
    try:
        client.set("smsq:test:sentinel", "yes")
        assert direct.get("smsq:test:sentinel") == "yes"
    finally:
        client.close()
        direct.close()


def test_system_runs_on_a_sentinel_url(sentinel: str, clean_primary: EmbeddedRedis) -> None:
    """SMSQ_REDIS_URL=sentinel://...: API, worker (kombu sentinel transport) and scheduler."""
    with running_stack(sentinel) as stack:
        assert stack.worker_env["SMSQ_REDIS_URL"] == sentinel
        send_with_receipts(stack, 5)
        stats = stack.sim_stats()
        assert stats["duplicates"] == []


def test_celery_publishes_through_a_kombu_form_sentinel_broker(
    sentinel: str, clean_primary: EmbeddedRedis
) -> None:
    """SMSQ_BROKER_URL in kombu's form (service from SMSQ_REDIS_SENTINEL_SERVICE): tasks go
    through Celery and kombu's sentinel transport instead of the store's direct enqueue."""
    address = sentinel.removeprefix("sentinel://").split("/")[0]
    broker = f"sentinel://{address};sentinel://{address}"
    with running_stack(sentinel, broker_url=broker) as stack:
        send_with_receipts(stack, 3)


def test_a_failover_is_followed(tmp_path: Path) -> None:
    """After `SENTINEL FAILOVER`, the same client writes to the promoted replica."""
    first = EmbeddedRedis(tmp_path / "a", appendonly=False, password="")
    second = EmbeddedRedis(tmp_path / "b", appendonly=False, password="")
    first.start()
    watcher: SentinelProcess | None = None
    client: redis.Redis | None = None
    try:
        second.start()
        replica = redis.Redis(port=second.port)
        replica.replicaof("127.0.0.1", first.port)
        replica.close()
        watcher = start_sentinel(tmp_path / "sentinel", first.port)
        client = connect(watcher.url, decode_responses=True, socket_timeout=5)
        client.set("before", "1")
        synced = redis.Redis(port=second.port, decode_responses=True)
        try:
            wait_for(lambda: synced.get("before") == "1", 30, "the replica never synced")
        finally:
            synced.close()
        admin = redis.Redis(port=watcher.port, decode_responses=True)
        try:

            def failover() -> bool:
                try:
                    return bool(admin.sentinel_failover(SERVICE))
                except redis.ResponseError:  # NOGOODSLAVE until the replica is known and synced
                    return False

            wait_for(failover, 30, "the sentinel never failed over")
        finally:
            admin.close()
        assert watcher is not None
        sentinel_process = watcher
        wait_for(
            lambda: sentinel_process.master_address() == ("127.0.0.1", second.port),
            30,
            "the replica was never promoted",
        )
        demoted = redis.Redis(port=first.port, decode_responses=True)
        try:  # until then the old primary still takes writes (Sentinel's known window)
            wait_for(
                lambda: demoted.role()[0] == "slave",
                30,
                "the old primary was never turned into a replica",
            )
        finally:
            demoted.close()

        def write_after_failover() -> bool:
            assert client is not None
            try:
                client.set("after", "2")
            except (redis.ConnectionError, redis.ReadOnlyError, redis.TimeoutError):
                time.sleep(0.2)
                return False
            return True

        wait_for(write_after_failover, 30, "the client never wrote to the new primary")
        promoted = redis.Redis(port=second.port, decode_responses=True)
        try:
            assert promoted.get("after") == "2"
            assert promoted.get("before") == "1"  # replicated before the failover
        finally:
            promoted.close()
    finally:
        if client is not None:
            client.close()
        if watcher is not None:
            watcher.stop()
        second.stop()
        first.stop()
