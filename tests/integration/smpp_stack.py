"""smsq with an SMPP carrier: the API, a worker, the scheduler and a real `smsq smpp` connector
process, bound to the SMPP SMSC stand-in (`tests.smpp.smsc`); a receiver for clients' receipts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.carrier_stack import CarrierStack, carrier_stack
from tests.integration.stack import REPO, SECRET_KEY, stop_process, wait_for
from tests.receiver import Receiver
from tests.servers import serve_app
from tests.smpp.smsc import RunningSmsc


def carriers_file(directory: Path, name: str, port: int, **keys: Any) -> Path:
    """A carriers file with one SMPP carrier `name` on the stand-in and a default route."""
    settings = {
        "type": "smpp", "host": "127.0.0.1", "port": port, "system_id": "smsq",
        "password": "secret", "bind": "transceiver", "binds": 2, "window": 10, "rate": 0,
        "enquire_link": 5,
    } | keys  # fmt: skip
    lines = [f"[carriers.{name}]"] + [f"{key} = {_toml(value)}" for key, value in settings.items()]
    path = directory / f"{name}.toml"
    path.write_text("\n".join([*lines, "", "[[routes]]", f'carriers = ["{name}"]', ""]))
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class SmppStack:
    """Handles on the running system."""

    stack: CarrierStack
    smsc: RunningSmsc
    receiver: Receiver
    receiver_url: str
    env: dict[str, str]
    connectors: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_connector(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "producer", "smpp"]
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
        self.connectors.append(process)
        return process

    def stop_connectors(self) -> None:
        for process in self.connectors:
            stop_process(process)

    def kill_connector(self) -> None:
        """SIGKILL: no unbind, no clean-up; what it held is left as it was."""
        for process in self.connectors:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)

    def send(self, to: str, text: str, path: str, level: int = 3) -> str:
        return self.stack.send(
            {"to": to, "from": "smsq", "content": text, "dlr": True, "dlr-level": level,
             "dlr-url": self.receiver_url + path}
        )  # fmt: skip

    def receipts(self, path: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The first `count` receipts POSTed to `path`, by level."""

        def arrived() -> list[dict[str, Any]] | None:
            found = [r.json() for r in self.receiver.snapshot() if r.path == path]
            return found if len(found) >= count else None

        got: list[dict[str, Any]] = wait_for(arrived, timeout, f"receipts at {path}")
        return sorted(got, key=lambda r: r["level"])


@contextmanager
def smpp_stack(
    redis_url: str,
    smsc: RunningSmsc,
    directory: Path,
    name: str,
    *,
    via: int | None = None,
    **keys: Any,
) -> Iterator[SmppStack]:
    """Run the system with one SMPP carrier `name` (carriers-file `keys` on top) and its
    connector, bound to `smsc` (or to the SMSC on port `via`, e.g. Jasmin, in front of it);
    wait until every bind is up."""
    path = carriers_file(directory, name, via or smsc.port, **keys)
    receiver = Receiver()
    with ExitStack() as stack:
        receiver_url = stack.enter_context(serve_app(receiver.app()))
        env = {"SMSQ_CARRIERS_FILE": str(path)}
        running = stack.enter_context(carrier_stack(redis_url, env))
        connector_env = {
            "SMSQ_REDIS_URL": redis_url, "SMSQ_SECRET_KEY": SECRET_KEY,
            "SMSQ_PUBLIC_URL": running.api_url, "SMSQ_DLR_ALLOW_PRIVATE": "127.0.0.0/8",
            "SMSQ_LOG_LEVEL": "WARNING", **env,
        }  # fmt: skip
        system = SmppStack(running, smsc, receiver, receiver_url, connector_env)
        stack.callback(system.stop_connectors)
        system.start_connector()
        pairs = keys.get("bind") == "transmitter + receiver"
        binds = int(keys.get("binds", 2)) * (2 if pairs else 1)
        if via is None:
            wait_for(lambda: smsc.bound_sessions() >= binds, 20, "the connector's binds")
        else:
            wait_for(lambda: running.redis.keys("smsq:smpp:*:alive:*"), 20, "the connector")
        yield system
