"""docker-compose.yml describes the system README.md names (no Docker engine here to run it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return dict(loaded["services"])


class TestCompose:
    def test_every_service_is_there(self) -> None:
        """Redis, the API, one worker per lane, the scheduler, the simulator and flower."""
        assert set(services()) >= {
            "redis", "api", "worker-otp", "worker-normal", "worker-bulk", "worker-dlr",
            "worker-carrier-dlr", "scheduler", "carrier-sim", "flower",
        }  # fmt: skip

    def test_redis_is_durable(self) -> None:
        """Redis runs with AOF every second and refuses writes rather than evicting."""
        command = " ".join(services()["redis"]["command"])
        assert "--appendonly yes" in command
        assert "--appendfsync everysec" in command
        assert "--maxmemory-policy noeviction" in command

    def test_each_worker_consumes_its_own_queue(self) -> None:
        """An OTP worker never shares its queue with a campaign, nor receipt delivery its
        threads with the carriers' receipts coming in."""
        queues = {
            name: spec["command"][spec["command"].index("-Q") + 1]
            for name, spec in services().items()
            if name.startswith("worker-")
        }
        assert queues == {
            "worker-otp": "otp", "worker-normal": "normal", "worker-bulk": "bulk",
            "worker-dlr": "dlr", "worker-carrier-dlr": "carrier-dlr",
        }  # fmt: skip

    def test_the_api_scales_with_a_setting(self) -> None:
        """SMSQ_API_PROCESSES sets the API's process count; the API runs as `python -m
        producer.api` (a TCP socket, the header timeout and connection limit in every process),
        never as plain `uvicorn --workers` (Nagle on, no header timeout: docs/api.md)."""
        command = services()["api"]["command"]
        assert command[:3] == ["python", "-m", "producer.api"]
        assert command[command.index("--processes") + 1] == "${SMSQ_API_PROCESSES:-2}"
        assert "SMSQ_API_PROCESSES" in COMPOSE.read_text().split("  api:")[0]  # documented

    def test_redis_wants_a_password_and_every_service_has_it(self) -> None:
        """Redis runs with requirepass from SMSQ_REDIS_PASSWORD (compose refuses to start
        without it), and every smsq service's SMSQ_REDIS_URL carries it."""
        found = services()
        command = found["redis"]["command"]
        password = command[command.index("--requirepass") + 1]
        assert password.startswith("${SMSQ_REDIS_PASSWORD:?")
        assert found["redis"]["environment"]["REDISCLI_AUTH"] == password  # the healthcheck
        urls = {
            name: spec["environment"]["SMSQ_REDIS_URL"]
            for name, spec in found.items()
            if name != "redis"
        }
        assert urls
        assert set(urls.values()) == {f"redis://:{password}@redis:6379/0"}
