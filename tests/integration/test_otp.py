"""OTP end to end: API → Redis → real Celery worker → carrier simulator, and back.

Codes are read from what the simulator received, as a user reads them from the SMS. The last
test searches everything written to Redis during a flow (MONITOR, so task messages too), the
worker's DEBUG log, the API's logs, the receipts and the final Redis contents for the codes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import redis
from celery import Celery
from typer.testing import CliRunner

from producer import cli
from producer.api import create_app
from producer.library import Producer
from tests.integration.stack import (
    ALL_QUEUES,
    REPO,
    SECRET_KEY,
    run_scheduler,
    stop_process,
    wait_for,
)
from tests.receiver import Receiver
from tests.servers import serve_app
from worker.celery_app import create_app as create_celery_app
from worker.keys import CreatedKey, KeyStore
from worker.otp.content import CODE_FIELD, code_keys
from worker.settings import Settings
from worker.simulator import SimulatorConfig, create_simulator_app

pytestmark = pytest.mark.integration

REJECTED = "+1415555999"  # the simulator refuses these numbers: no SMS is ever delivered
BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
# A real worker on every queue, logging at DEBUG into a file the last test searches.
WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "worker.tasks", "worker", "-Q", ALL_QUEUES,
    "-P", "threads", "-c", "16", "-n", "otp@%h", "--without-gossip", "--without-mingle",
    "--without-heartbeat", "-l", "DEBUG",
]  # fmt: skip


def number(n: int) -> str:
    """A valid US number of its own for each test (limits and codes never mix)."""
    return f"+1415555{n:04d}"


@dataclass
class OtpSystem:
    """Handles on the running system."""

    redis_url: str
    api_url: str
    tight_url: str  # the same system behind an API with strict limits and a 30 s cooldown
    sim_url: str
    receiver: Receiver
    receiver_url: str
    redis: redis.Redis
    http: httpx.Client
    key: CreatedKey
    settings: Settings
    celery: Celery
    worker_log: Path

    def send(self, url: str | None = None, **body: Any) -> httpx.Response:
        return self.http.post(f"{url or self.api_url}/otp/send", json=body)

    def sent(self, **body: Any) -> dict[str, Any]:
        reply = self.send(**body)
        assert reply.status_code == 202, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def verify(self, **body: Any) -> dict[str, Any]:
        reply = self.http.post(f"{self.api_url}/otp/verify", json=body)
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def status(self, challenge_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"{self.api_url}/otp/{challenge_id}").json()
        return result

    def sms(self, message_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get(f"{self.api_url}/sms/{message_id}").json()
        return result

    def carrier_texts(self) -> list[str]:
        stats = httpx.get(f"{self.sim_url}/stats", timeout=10).json()
        return [str(m["text"]) for m in stats["messages"]]

    def carrier_refs(self) -> dict[str, int]:
        refs: dict[str, int] = httpx.get(f"{self.sim_url}/stats", timeout=10).json()[
            "by_client_ref"
        ]
        return refs

    def code_from_carrier(self, marker: str) -> str:
        """The code in the SMS the carrier got whose text starts with `marker`."""

        def find() -> str | None:
            for text in self.carrier_texts():
                if text.startswith(marker):
                    return text.removeprefix(marker).strip()
            return None

        code: str = wait_for(find, 20, f"no SMS starting {marker!r} reached the carrier")
        return code

    def unsealed_code(self, message_id: str) -> str:
        """The code of a message as the worker sees it (for SMS the carrier refused)."""
        sealed = str(self.redis.hget(f"smsq:msg:{message_id}", CODE_FIELD))
        return code_keys(self.settings).unseal(sealed, message_id)

    def wait_drained(self, timeout: float = 20.0) -> None:
        """Until no task waits in the otp queue or runs unacknowledged."""
        wait_for(
            lambda: self.redis.llen("otp") == 0 and self.redis.hlen("unacked") == 0,
            timeout,
            "the otp queue did not drain",
        )

    def wait_job_done(self, challenge_id: str, timeout: float = 20.0) -> None:
        """Until the challenge's scheduled resend was published and run."""

        def gone() -> bool:
            scheduled = cast(list[str], self.redis.zrange("smsq:schedule", 0, -1))
            inflight = cast(list[str], self.redis.hkeys("smsq:schedule:inflight"))
            return not any(challenge_id in job for job in scheduled + inflight)

        wait_for(gone, timeout, "the resend job never left the schedule")
        self.wait_drained(timeout)


@pytest.fixture(scope="module")
def system(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtpSystem]:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    client.flushdb()
    worker_log = tmp_path_factory.mktemp("otp") / "worker.log"
    with ExitStack() as stack:
        stack.callback(client.close)
        sim = SimulatorConfig(receipt_delay=0.05, reject_prefixes=(REJECTED,))
        sim_url = stack.enter_context(serve_app(create_simulator_app(sim)))
        receiver = Receiver()
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        settings = Settings(
            redis_url=redis_server_url,
            carrier_url=sim_url,
            dlr_allow_private=["127.0.0.0/8"],
            secret_key=SECRET_KEY,
            otp_cooldown_seconds=1,
            otp_limit_number=100,
            otp_limit_prefix=1000,
        )
        api_url = stack.enter_context(serve_app(create_app(settings)))
        tight = settings.model_copy(update={"otp_cooldown_seconds": 30, "otp_limit_number": 2})
        tight_url = stack.enter_context(serve_app(create_app(tight)))
        env = {
            "SMSQ_REDIS_URL": redis_server_url,
            "SMSQ_CARRIER_URL": sim_url,
            "SMSQ_PUBLIC_URL": api_url,
            "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_SECRET_KEY": SECRET_KEY,
            "SMSQ_OTP_LIMIT_NUMBER": "100",
            "SMSQ_OTP_LIMIT_PREFIX": "1000",
        }
        sink = stack.enter_context(worker_log.open("wb"))
        worker = subprocess.Popen(
            WORKER_COMMAND,
            env={**_environment(), **env, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop_process, worker)
        stack.enter_context(run_scheduler(redis_server_url, settings))
        key = KeyStore(client).create("otp-tests")
        http = httpx.Client(headers={"authorization": f"Bearer {key.api_key}"}, timeout=10)
        stack.callback(http.close)
        celery = create_celery_app(settings)
        stack.callback(celery.close)
        wanted = set(ALL_QUEUES.split(","))
        wait_for(
            lambda: wanted <= (consumed_queues(celery) or set()), 60, "the worker did not start"
        )
        yield OtpSystem(
            redis_url=redis_server_url,
            api_url=api_url,
            tight_url=tight_url,
            sim_url=sim_url,
            receiver=receiver,
            receiver_url=receiver_url,
            redis=client,
            http=http,
            key=key,
            settings=settings,
            celery=celery,
            worker_log=worker_log,
        )


def consumed_queues(celery: Celery) -> set[str] | None:
    """The queues the worker consumes right now; None while it does not answer (not up yet,
    or too busy to answer within the second: not an answer that it consumes nothing)."""
    answers = celery.control.inspect(timeout=1.0, limit=1).active_queues()
    if not answers:
        return None
    return {queue["name"] for queues in answers.values() for queue in queues}


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}


class TestFlow:
    def test_code_from_the_sms_is_approved_once(self, system: OtpSystem) -> None:
        """Send, read the code off the carrier, see it delivered, approve it, not twice."""
        sent = system.sent(to=number(1), template="T1 {code}", purpose="login")
        assert set(sent) >= {"id", "to", "expires_at", "status"}
        assert sent["status"] == "pending"
        code = system.code_from_carrier("T1")
        assert re.fullmatch(r"[0-9]{6}", code)
        wait_for(lambda: system.status(sent["id"])["status"] == "delivered", 20, "never delivered")
        sms = system.sms(sent["message_id"])
        assert (sms["priority"], sms["content"]) == ("otp", "<otp code hidden>")
        assert system.verify(to=number(1), purpose="login", code=code) == {
            "valid": True,
            "status": "approved",
            "attempts_remaining": 4,
        }
        assert system.status(sent["id"])["status"] == "approved"
        assert system.verify(id=sent["id"], code=code)["status"] == "not_found"

    def test_wrong_codes_count_down_to_lockout(self, system: OtpSystem) -> None:
        """Five wrong codes lock the code; the right one is refused after."""
        sent = system.sent(to=number(2), template="T2 {code}")
        code = system.code_from_carrier("T2")
        wrong = "000000" if code != "000000" else "111111"
        left = [system.verify(id=sent["id"], code=wrong)["attempts_remaining"] for _ in range(5)]
        assert left == [4, 3, 2, 1, 0]
        assert system.verify(id=sent["id"], code=code)["status"] == "max_attempts"
        assert system.status(sent["id"])["status"] == "max_attempts"

    def test_expired_code_is_refused(self, system: OtpSystem) -> None:
        """After its ttl the right code is expired."""
        sent = system.sent(to=number(3), template="T3 {code}", ttl=2)
        code = system.code_from_carrier("T3")
        expires = datetime.fromisoformat(sent["expires_at"].replace("Z", "+00:00"))
        time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.05)
        assert system.verify(id=sent["id"], code=code) == {
            "valid": False,
            "status": "expired",
            "attempts_remaining": 0,
        }

    def test_concurrent_verifies_approve_exactly_once(self, system: OtpSystem) -> None:
        """Eight simultaneous checks of the right code: exactly one is valid."""
        sent = system.sent(to=number(4), template="T4 {code}")
        code = system.code_from_carrier("T4")
        start = threading.Barrier(8)

        def check(_: int) -> bool:
            start.wait()
            return bool(system.verify(id=sent["id"], code=code)["valid"])

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(check, range(8)))
        assert sorted(results) == [False] * 7 + [True]


class TestResend:
    def test_resend_supersedes_and_cancels_the_queued_sms(self, system: OtpSystem) -> None:
        """A new code while the old SMS still waits: the old SMS is cancelled, never sent."""
        control = system.celery.control
        control.cancel_consumer("otp", reply=True, timeout=5.0, limit=1)
        wait_for(
            lambda: "otp" not in (consumed_queues(system.celery) or {"otp"}), 30,
            "otp still consumed",
        )  # fmt: skip
        try:
            first = system.sent(to=number(5), template="T5a {code}")
            time.sleep(1.1)  # the cooldown
            second = system.sent(to=number(5), template="T5b {code}")
            assert system.sms(first["message_id"])["status"] == "cancelled"
            assert system.status(first["id"])["status"] == "superseded"
        finally:
            control.add_consumer("otp", reply=True, timeout=5.0, limit=1)
            wait_for(
                lambda: "otp" in (consumed_queues(system.celery) or set()), 30, "otp not consumed"
            )
        code = system.code_from_carrier("T5b")
        system.wait_drained()
        assert not any(text.startswith("T5a") for text in system.carrier_texts())
        assert f"{first['message_id']}:1" not in system.carrier_refs()
        assert system.sms(first["message_id"])["status"] == "cancelled"
        assert system.verify(id=first["id"], code=code)["status"] == "expired"
        assert system.verify(id=second["id"], code=code)["valid"] is True

    def test_scheduled_resend_fires_without_a_delivered_receipt(self, system: OtpSystem) -> None:
        """The carrier refuses the SMS: after resend_after the same code goes out once more."""
        sent = system.sent(to=REJECTED + "1", template="T6 {code}", resend_after=1)
        code = system.unsealed_code(sent["message_id"])
        wait_for(lambda: system.status(sent["id"])["sends"] == 2, 20, "no resend happened")
        system.wait_job_done(sent["id"])
        status = system.status(sent["id"])
        resent = status["message_id"]
        assert resent != sent["message_id"]
        assert system.unsealed_code(resent) == code
        sms = wait_for(
            lambda: (m := system.sms(resent))["status"] == "rejected" and m, 20, "not submitted"
        )
        assert sms["priority"] == "otp"
        assert sms["segments"][0]["error"]["code"] == "invalid_destination"
        assert system.verify(id=sent["id"], code=code)["valid"] is True

    def test_scheduled_resend_stays_quiet_after_delivery(self, system: OtpSystem) -> None:
        """A delivered SMS is not resent when resend_after comes."""
        sent = system.sent(to=number(7), template="T7 {code}", resend_after=2)
        system.code_from_carrier("T7")
        wait_for(lambda: system.status(sent["id"])["status"] == "delivered", 20, "never delivered")
        system.wait_job_done(sent["id"])
        status = system.status(sent["id"])
        assert (status["sends"], status["message_id"]) == (1, sent["message_id"])
        assert sum(text.startswith("T7") for text in system.carrier_texts()) == 1


class TestRefusals:
    def test_cooldown_and_limits_answer_429(self, system: OtpSystem) -> None:
        """Within the cooldown, then over the per-number limit: 429 with Retry-After."""
        to = number(8)
        assert system.send(system.tight_url, to=to).status_code == 202
        cooldown = system.send(system.tight_url, to=to)
        assert cooldown.status_code == 429
        assert 1 <= int(cooldown.headers["retry-after"]) <= 30
        assert system.send(system.tight_url, to=to, purpose="reset").status_code == 202
        limited = system.send(system.tight_url, to=to, purpose="signup")
        assert limited.status_code == 429
        assert "this number" in limited.json()["error"]["message"]
        assert 3500 < int(limited.headers["retry-after"]) <= 3600

    def test_premium_rate_numbers_are_refused(self, system: OtpSystem) -> None:
        """A premium-rate destination is a 422 on `to`, and nothing is sent."""
        reply = system.send(to="+19005551234")
        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "number_type_refused"


class TestLibraryAndCli:
    def test_library_sends_and_verifies(self, system: OtpSystem) -> None:
        """`Producer.otp_send` / `otp_verify` work like the API, on the same system."""
        settings = Settings(redis_url=system.redis_url, secret_key=SECRET_KEY)
        with Producer(settings=settings, key_id="library-tests") as producer:
            sent = producer.otp_send(number(9), template="T9 {code}")
            code = system.code_from_carrier("T9")
            wrong = producer.otp_verify("0" * 6 if code != "0" * 6 else "1" * 6, id=sent.id)
            assert (wrong.valid, wrong.attempts_remaining) == (False, 4)
            assert producer.otp_verify(code, to=number(9)).valid
            assert producer.otp_status(sent.id)["status"] == "approved"

    def test_cli_sends_and_verifies(self, system: OtpSystem) -> None:
        """`smsq otp send` prints the challenge; `smsq otp verify` approves the code."""
        runner = CliRunner()
        env = {"SMSQ_REDIS_URL": system.redis_url, "SMSQ_SECRET_KEY": SECRET_KEY}
        sent = runner.invoke(
            cli.app, ["otp", "send", number(10), "--template", "T10 {code}"], env=env
        )
        assert sent.exit_code == 0, sent.output
        challenge = orjson.loads(sent.stdout)
        code = system.code_from_carrier("T10")
        assert code not in sent.output
        checked = runner.invoke(cli.app, ["otp", "verify", code, "--id", challenge["id"]], env=env)
        assert checked.exit_code == 0, checked.output
        assert orjson.loads(checked.stdout) == {
            "valid": True,
            "status": "approved",
            "attempts_remaining": 4,
        }
        refused = runner.invoke(cli.app, ["otp", "send", "+19005551234"], env=env)
        assert refused.exit_code == 2
        assert "premium-rate" in refused.output


class RedisMonitor:
    """Everything any client sends to Redis while it runs (MONITOR), task messages included."""

    STOP = "otp-test-monitor-stop"

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        client = redis.Redis.from_url(self.url)
        client.echo(self.STOP)
        client.close()
        self._thread.join(10)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]  # untyped in redis-py
            self._ready.set()
            for command in monitor.listen():
                self.commands.append(str(command["command"]))
                if self.STOP in command["command"]:
                    break
        client.close()

    def text(self) -> str:
        """The commands, plus every base64 token in them decoded (Celery bodies are base64)."""
        raw = "\n".join(self.commands)
        decoded = []
        for token in BASE64_TOKEN.findall(raw):
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                with suppress(binascii.Error, ValueError):
                    padded = token + "=" * (-len(token) % 4)
                    decoded.append(decode(padded).decode("utf-8", "replace"))
        return raw + "\n" + "\n".join(decoded)


def redis_contents(client: redis.Redis) -> str:
    """Every key and value in Redis, as one string to search."""
    parts = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        else:
            value = client.get(key)
        parts.append(f"{key} {value}")
    return "\n".join(parts)


class TestNoCodeInClear:
    def test_codes_appear_in_no_log_key_task_or_receipt(
        self, system: OtpSystem, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After a full run (checks, a supersession, a scheduled resend, receipts), a search of
        everything written to Redis, the worker's DEBUG log, the API's logs and the receipts
        finds none of the codes."""
        caplog.set_level(logging.DEBUG)
        receipts = f"{system.receiver_url}/receipts"
        codes = []
        with RedisMonitor(system.redis_url) as monitor:
            first = system.sent(
                to=number(11), template="L1 {code}", length=10, resend_after=3,
                client_ref="leak", **{"dlr-url": receipts, "dlr-level": 3},
            )  # fmt: skip
            codes.append(system.code_from_carrier("L1"))
            system.verify(id=first["id"], code="0123456789")
            assert system.verify(to=number(11), code=codes[0])["valid"]
            time.sleep(1.1)
            second = system.sent(to=number(11), template="L2 {code}", length=10)
            codes.append(system.code_from_carrier("L2"))
            resent = system.sent(to=REJECTED + "2", template="L3 {code}", length=10, resend_after=1)
            codes.append(system.unsealed_code(resent["message_id"]))
            wait_for(lambda: system.status(resent["id"])["sends"] == 2, 20, "no resend")
            system.status(second["id"])
            system.sms(second["message_id"])
            wait_for(
                lambda: (
                    sum(first["message_id"] in r.body.decode() for r in system.receiver.snapshot())
                    >= 2
                ),
                20,
                "receipts did not arrive",
            )
            system.wait_job_done(first["id"])
            system.wait_job_done(resent["id"])
        assert all(len(code) == 10 and code.isdigit() for code in codes)
        written = monitor.text()
        assert "sms.send" in written  # the task messages were seen
        assert "otp.resend" in written
        worker_log = system.worker_log.read_text(errors="replace")
        assert "sms.send" in worker_log  # the worker logged at DEBUG
        stored = redis_contents(system.redis)
        sent_back = "\n".join(r.body.decode() + r.query for r in system.receiver.snapshot())
        for code in codes:
            assert code not in written
            assert code not in worker_log
            assert code not in caplog.text
            assert code not in stored
            assert code not in sent_back
