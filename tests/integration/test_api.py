"""The API as a real process on a real Redis: it answers an OTP while it accepts a campaign, two
API processes share their keys and limits, and `smsq keys revoke --cancel-pending` cancels."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from producer import cli
from producer.desk import MessageDesk
from producer.schemas import SendRequest
from producer.services import Services, build_services
from tests.integration.stack import REPO, stop_process, wait_for
from worker.embedded_redis import free_port
from worker.keys import KeyStore
from worker.settings import Settings

pytestmark = pytest.mark.integration

SECRET = "integration-test-server-key"


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_api(redis_url: str, processes: int = 1, **env: str) -> Iterator[str]:
    """The API (`python -m producer.api`) with `processes` uvicorn processes on one port."""
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")},
        "SMSQ_REDIS_URL": redis_url,
        "SMSQ_SECRET_KEY": SECRET,
        "SMSQ_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
        **env,
    }
    command = [sys.executable, "-m", "producer.api", "--port", str(port),
               "--processes", str(processes)]  # fmt: skip
    process = subprocess.Popen(command, env=full_env, cwd=REPO, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 60, "the API process did not start")
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def api_url(redis_url: str) -> Iterator[str]:
    with running_api(redis_url) as url:
        yield url


class TestResponsiveDuringIngest:
    def test_an_otp_is_answered_before_a_large_batch_is(
        self, api_url: str, redis_client: redis.Redis
    ) -> None:
        """While 20,000 recipients are being accepted, an OTP send gets its 202 first."""
        key = KeyStore(redis_client).create("tenant").api_key
        headers = {"authorization": f"Bearer {key}"}
        body = {
            "content": "Our sale starts tomorrow, {to}",
            "recipients": [f"+1415{5_550_000 + i:07d}" for i in range(20_000)],
        }
        finished: list[str] = []
        batch: list[httpx.Response] = []

        def upload() -> None:
            reply = httpx.post(f"{api_url}/sms/batch", json=body, headers=headers, timeout=300)
            batch.append(reply)
            finished.append("batch")

        uploader = threading.Thread(target=upload)
        uploader.start()
        try:
            # The batch is being stored (its first chunks are in Redis), not yet answered.
            wait_for(lambda: redis_client.keys("smsq:batch:*:ids"), 60, "the batch never started")
            assert not finished, "the batch was accepted before the OTP could be sent"
            otp = httpx.post(
                f"{api_url}/otp/send", json={"to": "+447911123456"}, headers=headers, timeout=60
            )
            finished.append("otp")
        finally:
            uploader.join(300)
        assert otp.status_code == 202, otp.text
        assert batch[0].status_code == 202, batch[0].text
        assert batch[0].json()["accepted"] == 20_000
        assert finished == ["otp", "batch"]


class TestSeveralProcesses:
    def test_two_processes_share_keys_limits_and_metrics(
        self, redis_url: str, redis_client: redis.Redis, tmp_path: Path
    ) -> None:
        """Two API processes on one port: sends pass through both, /metrics adds both up,
        and a revocation holds in both from the next call (no per-process cache of it)."""
        key = KeyStore(redis_client).create("tenant")
        headers = {"authorization": f"Bearer {key.api_key}"}
        body = {"to": "+14155552671", "content": "hi"}
        with running_api(redis_url, 2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as url:
            sent = 0

            def send_on_a_new_connection() -> bool:
                nonlocal sent
                with httpx.Client(headers=headers, timeout=30) as client:
                    assert client.post(f"{url}/sms/send", json=body).status_code == 202
                sent += 1
                return len(list(tmp_path.glob("counter_*.db"))) == 2

            # Each new connection goes to whichever process accepts it first: both, soon.
            wait_for(send_on_a_new_connection, 60, "one process took every connection")
            counted = _requests_counted(httpx.get(f"{url}/metrics", timeout=30).text)
            assert counted == sent
            KeyStore(redis_client).revoke(key.key.id)
            for _ in range(10):
                with httpx.Client(headers=headers, timeout=30) as client:
                    assert client.post(f"{url}/sms/send", json=body).status_code == 401


def _requests_counted(exposition: str) -> float:
    """`smsq_http_requests_total` of POST /sms/send answered 202, over every process."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "smsq_http_requests_total"
        and sample.labels.get("route") == "/sms/send"
        and sample.labels.get("status") == "202"
    )


class TestCancelPending:
    def test_revoke_cancels_the_keys_pending_messages_as_delete_does(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        """`smsq keys revoke ID --cancel-pending`: the key's queued and scheduled messages end
        `cancelled` exactly as `DELETE /sms/{id}` leaves one; others' and sent ones stay."""
        services = build_services(Settings(redis_url=redis_url))
        keys = KeyStore(redis_client)
        tenant, other = keys.create("tenant").key, keys.create("other").key
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        desk = services.desk
        dlr = {"dlr": True, "dlr-url": "https://client.example/dlr", "dlr-level": 3}
        queued = [_send(desk, tenant.id, **dlr) for _ in range(3)]
        scheduled = [_send(desk, tenant.id, send_at=later) for _ in range(2)]
        submitting = _send(desk, tenant.id)
        services.store.transition(submitting, {"queued"}, "submitting")
        by_delete = _send(desk, tenant.id, **dlr)
        desk.cancel(by_delete, tenant.id)
        theirs = _send(desk, other.id)

        result = CliRunner().invoke(
            cli.app,
            ["keys", "revoke", tenant.id, "--cancel-pending"],
            env={"SMSQ_REDIS_URL": redis_url},
        )

        assert result.exit_code == 0, result.output
        assert "cancelled 5 pending message(s)" in result.output
        for message_id in queued + scheduled:
            assert _cancelled_like(services.store.fields(message_id)) == _cancelled_like(
                services.store.fields(by_delete)
            )
            assert _events(services, message_id)[-1] == _events(services, by_delete)[-1]
        for message_id in [*queued, by_delete]:  # their receipt opened, saying `cancelled`
            fields = services.store.fields(message_id)
            assert fields["rcpt:1:state"] in ("open", "sending", "sent", "dead")
            assert orjson.loads(fields["rcpt:1:snap"])["status"] == "cancelled"
        assert services.store.fields(submitting)["status"] == "submitting"
        assert services.store.fields(theirs)["status"] == "queued"
        revoked = keys.get(tenant.id)
        assert revoked is not None
        assert revoked.revoked
        services.redis.close()


def _send(desk: MessageDesk, key_id: str, **options: Any) -> str:
    body = SendRequest.model_validate({"to": "+14155552671", "content": "hi", **options})
    return str(desk.send(body, key_id)["id"])


def _cancelled_like(fields: dict[str, str]) -> dict[str, str]:
    """What cancelling set (status, and that it is done), without ids and times."""
    return {"status": fields["status"], "done": str("done_at" in fields)}


def _events(services: Services, message_id: str) -> list[str]:
    return [e["event"] for e in services.store.events(message_id)]
