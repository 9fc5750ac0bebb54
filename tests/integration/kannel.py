"""A real Kannel for integration tests: bearerbox + smsbox + an SMSC.

Debian's `kannel` package has `bearerbox` and `smsbox`; `kannel-extras` has the test client
`fakesmsc`, which connects to a `smsc = fake` connection in bearerbox and prints every message
it is handed (`Got message N: <from to udh <udh> data <text>>`, url-encoded). Bearerbox's fake
SMSC reports delivery (DLR type 1) for every message it hands over with a device-level
`dlr-mask`, so receipts really come back through smsbox's `dlr-url`.

With `mo_url`, smsbox's `sms-service` fetches that URL for every inbound message (the group
docs/inbound.md documents), and a second fake SMSC connection (`handsets`) takes the MOs that
`Kannel.send_mo` has a short-lived fakesmsc client send, as a handset's reply.

fakesmsc only ever delivers. With `smpp_port`, bearerbox instead binds (`smsc = smpp`,
transceiver) to an SMPP SMSC on that port, e.g. our stand-in (`tests.smpp.smsc`), which can
refuse a `submit_sm` or report `EXPIRED`, `UNDELIV`, `REJECTD`.

`.ci/run` installs the packages; where the binaries are absent, `KANNEL_MISSING` says why and
the tests skip.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import httpx

from tests.integration.stack import stop_process

FAKESMSC_PATHS = ("/usr/lib/kannel/test/fakesmsc", "/usr/local/lib/kannel/test/fakesmsc")
USERNAME, PASSWORD = "smsq", "kannel-secret"


def _find(name: str, extra: tuple[str, ...] = ()) -> str | None:
    return shutil.which(name) or next((p for p in extra if Path(p).is_file()), None)


BEARERBOX, SMSBOX = _find("bearerbox"), _find("smsbox")
FAKESMSC = _find("fakesmsc", FAKESMSC_PATHS)
KANNEL_MISSING = (
    None
    if BEARERBOX and SMSBOX and FAKESMSC
    else "Kannel is not installed (apt-get install kannel kannel-extras)"
)

CONFIG = """\
group = core
admin-port = {admin}
admin-password = admin-secret
smsbox-port = {box}
log-file = "{dir}/bearerbox.log"
log-level = 1
box-allow-ip = "127.0.0.1"
dlr-storage = internal

{smsc_group}
group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box}
sendsms-port = {sendsms}
log-file = "{dir}/smsbox.log"
log-level = 1

group = sendsms-user
username = {username}
password = {password}
max-messages = 1

{service}"""

NO_SERVICE = """\
group = sms-service
keyword = default
text = "No service"
"""

# The sms-service group of docs/inbound.md, and the connection handsets' replies come in on.
MO_SERVICE = """\
group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "{url}&from=%p&to=%P&text=%b&udh=%u&coding=%c&charset=%C&id=%I"

group = smsc
smsc = fake
smsc-id = handsets
port = {port}
connect-allow-ip = "127.0.0.1"
"""

FAKE_SMSC = """\
group = smsc
smsc = fake
smsc-id = fake
port = {port}
connect-allow-ip = "127.0.0.1"
"""

SMPP_SMSC = """\
group = smsc
smsc = smpp
smsc-id = smpp
host = 127.0.0.1
port = {port}
transceiver-mode = true
smsc-username = smsq
smsc-password = smsc-secret
system-type = ""
interface-version = 34
reconnect-delay = 1
max-pending-submits = 10
"""

_LINE = re.compile(r"Got message \d+: <(\S+) (\S+) (udh (\S+) data|data|text) ?(.*)>$")


@dataclass(frozen=True)
class Handed:
    """One message bearerbox handed to the fake SMSC."""

    sender: str
    to: str
    udh: bytes
    data: bytes  # UTF-8 for GSM text (Kannel's internal form), UTF-16BE for UCS-2


@dataclass
class Kannel:
    """A running Kannel; `url` is smsbox's sendsms base URL."""

    url: str
    output: Path
    handsets_port: int = 0  # with `mo_url`: where `send_mo` connects

    def send_mo(self, sender: str, to: str, kind: str, data: str, timeout: float = 10.0) -> None:
        """Have a handset's reply come in (fakesmsc's message `sender to kind data`: `data`
        url-encoded for kinds `data` and `ucs2`), then disconnect."""
        if not (FAKESMSC and self.handsets_port):
            raise RuntimeError("Kannel runs without an MO service (mo_url)")
        command = [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.handsets_port), "-m", "1",
                   f"{sender} {to} {kind} {data}"]  # fmt: skip
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + timeout
            assert client.stdout is not None
            while time.monotonic() < deadline:  # it stays connected after sending: stop it
                line = client.stdout.readline()
                if b"sent message 1" in line:
                    return
                if not line and client.poll() is not None:
                    break
            raise RuntimeError("fakesmsc did not send the MO")
        finally:
            stop_process(client, 5.0)
            if client.stdout is not None:
                client.stdout.close()

    def handed(self) -> list[Handed]:
        """What the fake SMSC received so far, in order."""
        found = []
        for line in self.output.read_text(errors="replace").splitlines():
            match = _LINE.search(line)
            if match is None:
                continue
            sender, to, kind, udh, data = match.groups()
            raw = data.encode() if kind == "text" else unquote_to_bytes(data.replace("+", "%20"))
            udh_bytes = unquote_to_bytes(udh.replace("+", "%20")) if udh else b""
            found.append(Handed(sender, to, udh_bytes, raw))
        return found


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def running_kannel(
    directory: Path, *, smpp_port: int | None = None, mo_url: str | None = None
) -> Iterator[Kannel]:
    """Start bearerbox, the SMSC (Kannel's fake SMSC client, or a bind to the SMPP SMSC on
    `smpp_port`) and smsbox; stop them (by pid) afterwards, whatever fails. `mo_url`: the
    sms-service fetches it (with a query already) for each inbound message."""
    if not (BEARERBOX and SMSBOX and FAKESMSC):
        raise RuntimeError(KANNEL_MISSING)
    admin, box, smsc, sendsms, handsets = free_ports(5)
    config = directory / "kannel.conf"
    group = SMPP_SMSC.format(port=smpp_port) if smpp_port else FAKE_SMSC.format(port=smsc)
    service = MO_SERVICE.format(url=mo_url, port=handsets) if mo_url else NO_SERVICE
    values = {"admin": admin, "box": box, "sendsms": sendsms, "dir": directory}
    config.write_text(
        CONFIG.format(
            username=USERNAME, password=PASSWORD, smsc_group=group, service=service, **values
        )
    )
    output = directory / "fakesmsc.out"
    with ExitStack() as stack:

        def start(command: list[str], log: Path) -> None:
            handle = stack.enter_context(log.open("wb"))
            process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            stack.callback(stop_process, process, 10.0)

        start([BEARERBOX, "-v", "2", str(config)], directory / "bearerbox.out")
        _wait_port(admin)
        if smpp_port is None:
            start([FAKESMSC, "-H", "127.0.0.1", "-r", str(smsc), "-m", "0", "1 2 text x"], output)
        else:
            output.touch()
        start([SMSBOX, "-v", "2", str(config)], directory / "smsbox.out")
        url = f"http://127.0.0.1:{sendsms}"
        _wait_sendsms(url)
        _wait_smsc_online(f"http://127.0.0.1:{admin}/status.txt?password=admin-secret")
        yield Kannel(url, output, handsets if mo_url else 0)


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"Kannel did not open port {port}")


def _wait_sendsms(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # No credentials: smsbox answers 403 once it is serving.
            if httpx.get(f"{url}/cgi-bin/sendsms", timeout=1).status_code in (400, 403):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("smsbox did not start serving sendsms")


def _wait_smsc_online(status_url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "online" in httpx.get(status_url, timeout=1).text.split("SMSC connections:")[-1]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the fake SMSC did not come online in bearerbox")
