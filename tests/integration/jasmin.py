"""A real Jasmin SMS gateway (`jasmind`) on loopback, as the SMSC an smsq SMPP carrier binds to.

Jasmin runs from its own virtualenv at `.jasmin/` in the repository (its pins clash with smsq's:
`python3 -m venv .jasmin && .jasmin/bin/pip install jasmin==0.11.0`; `.ci/run` does it when it
can). 0.11.0, not 0.11.1: 0.11.1 fails on every `submit_sm_resp` it gets from its own SMSC
(`'SubmitSM' object has no attribute 'response'`, jookies/jasmin#1236), so it never relays a
receipt to an SMPP client. Jasmin needs RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (a
private Valkey here). Configured through its jCli console: a user `smsq` / `secret`, an SMPP
client connector to the given SMSC (our stand-in), and a default MT route to it; so a
submit_sm to Jasmin's SMPP server goes to the stand-in, and the stand-in's receipt comes back
through Jasmin to the client's bind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.stack import REPO, wait_for
from worker.embedded_redis import EmbeddedRedis, free_port

PYTHON = REPO / ".jasmin" / "bin" / "python"
USERNAME, PASSWORD = "smsq", "secret"
RABBITMQ = ("127.0.0.1", 5672)


def missing() -> str | None:
    """Why Jasmin cannot run here, or None."""
    if not PYTHON.exists():
        return f"no Jasmin at {PYTHON.parent.parent} (see tests/integration/jasmin.py)"
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError:
        return "no RabbitMQ at 127.0.0.1:5672 (Jasmin needs it)"
    return None


@dataclass
class Jasmin:
    smpp_port: int  # Jasmin's SMPP server: bind here as `smsq` / `secret`
    log_dir: Path


def config(root: Path, smpp: int, redis_url: str, ports: list[int]) -> str:
    """jasmin.cfg: every listener on loopback on a free port; Redis ours; RabbitMQ's `/`."""
    jcli, http, router, manager, pb = ports
    redis = urlsplit(redis_url)
    log = root / "var" / "log" / "jasmin"
    return f"""
[smpp-server]
id = smsq
bind = 127.0.0.1
port = {smpp}
log_file = {log}/smpp-server.log
[smpp-server-pb]
bind = 127.0.0.1
port = {pb}
[client-management]
bind = 127.0.0.1
port = {manager}
[router]
bind = 127.0.0.1
port = {router}
[http-api]
bind = 127.0.0.1
port = {http}
[redis-client]
host = 127.0.0.1
port = {redis.port}
password = {redis.password}
dbid = 0
[amqp-broker]
host = 127.0.0.1
port = {RABBITMQ[1]}
username = guest
password = guest
vhost = /
[jcli]
bind = 127.0.0.1
port = {jcli}
authentication = False
"""


def jcli(port: int, commands: list[str]) -> str:
    """Type `commands` into jCli, each waiting for its prompt; everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as console:
        # The first prompt waits for a telnet negotiation we do not do: the banner will do.
        answers = [_until(console, b"Session ref")]
        for command in commands:
            console.sendall(command.encode() + b"\r\n")
            answers.append(_until(console, b"jcli : ", b"> "))
    return "".join(answers)


def _until(console: socket.socket, *prompts: bytes) -> str:
    data = b""
    deadline = time.monotonic() + 10
    while not any(prompt in data for prompt in prompts):  # telnet control bytes may follow
        if time.monotonic() > deadline:
            raise TimeoutError(f"jCli did not prompt: {data[-200:]!r}")
        data += console.recv(65536)
    return data.decode(errors="replace")


SETUP = [
    "group -a", "gid smsq", "ok",
    "user -a", f"username {USERNAME}", f"password {PASSWORD}", "gid smsq", "uid smsq", "ok",
    "smppccm -a", "cid standin", "host 127.0.0.1", "port {port}", "username jasmin",
    "password pw", "submit_throughput 0", "ok",
    "smppccm -1 standin",
    "mtrouter -a", "type defaultroute", "connector smppc(standin)", "rate 0.00", "ok",
]  # fmt: skip


@contextmanager
def running_jasmin(directory: Path, smsc_port: int) -> Iterator[Jasmin]:
    """jasmind bound to the SMSC on `smsc_port`, its SMPP server ready; stopped on exit."""
    root = directory / "jasmin"
    for sub in ("etc/jasmin/resource", "etc/jasmin/store", "var/log/jasmin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    spec = next(PYTHON.parent.parent.glob("lib/python*/site-packages/txamqp/specs/standard"))
    shutil.copy(spec / "amqp0-9-1.stripped.xml", root / "etc/jasmin/resource/amqp0-9-1.xml")
    with ExitStack() as stack:
        valkey = EmbeddedRedis(directory / "jasmin-redis", appendonly=False)
        redis_url = valkey.start()
        stack.callback(valkey.stop)
        smpp, jcli_port, *others = (free_port() for _ in range(6))
        text = config(root, smpp, redis_url, [jcli_port, *others])
        (root / "etc/jasmin/jasmin.cfg").write_text(text)
        output = stack.enter_context((root / "jasmind.out").open("w"))
        jasmind = subprocess.Popen(
            [str(PYTHON), str(PYTHON.parent / "jasmind.py"), "--enable-dlr-lookup",
             "--enable-dlr-thrower"],
            env={**os.environ, "ROOT_PATH": str(root)}, cwd=root, stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(_stop, jasmind)
        # Not a probe connection to jCli: it serves one console at a time, and a dropped one
        # leaves the next without its prompt.
        started = root / "jasmind.out"
        wait_for(lambda: "jCli Started" in started.read_text(), 60, "jasmind started")
        wait_for(lambda: _listening(smpp), 30, "Jasmin's SMPP server")
        jcli(jcli_port, [line.format(port=smsc_port) for line in SETUP])
        wait_for(
            lambda: "BOUND_TRX" in jcli(jcli_port, ["smppccm -l"]), 30, "Jasmin bound to the SMSC"
        )
        yield Jasmin(smpp, root / "var" / "log" / "jasmin")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
