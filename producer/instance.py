"""A running `smsq up`, as the CLI and the library find it: through its data directory.

`smsq up` holds an exclusive lock (`fcntl.flock`) on `<data_dir>/up.lock` for as long as it runs
and writes into it its PID, API URL, carrier URL and receipt allow-list; next to it, files only
its user can read: `redis.url` (the Redis it runs on), `secret_key` (the server key) and
`dev-key` (the development API key). The lock, not the files, says whether it runs: what a
killed `smsq up` left behind is ignored.

`client_settings` is the one place every command and `Producer()` get their settings from:
explicit settings win; the running instance fills the rest; with neither, `NoInstanceError`
(never a silent fall back to `redis://127.0.0.1:6379`: another Redis may live there).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from worker.embedded_redis import write_private
from worker.errors import SmsqError
from worker.settings import Settings


class NoInstanceError(SmsqError):
    """No running `smsq up` was found and no `SMSQ_REDIS_URL` names a system (CLI, library)."""


@dataclass(frozen=True, slots=True)
class DataDir:
    """The files of one data directory (`SMSQ_DATA_DIR`, `.smsq` by default)."""

    path: Path

    @classmethod
    def of(cls, settings: Settings) -> DataDir:
        return cls(Path(settings.data_dir))

    @property
    def lock(self) -> Path:
        return self.path / "up.lock"

    @property
    def redis_url(self) -> Path:
        return self.path / "redis.url"

    @property
    def secret_key(self) -> Path:
        return self.path / "secret_key"

    @property
    def dev_key(self) -> Path:
        return self.path / "dev-key"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"


def server_key(data: DataDir) -> str:
    """The data directory's server key, made on first use."""
    if not data.secret_key.exists():
        write_private(data.secret_key, secrets.token_urlsafe(32))
    return data.secret_key.read_text().strip()


@dataclass(frozen=True, slots=True)
class Instance:
    """What a running `smsq up` tells the processes that look for it."""

    pid: int
    api_url: str
    carrier_url: str
    dlr_allow_private: tuple[str, ...]
    dlr_deny: tuple[str, ...]
    redis_url: str | None  # None while it is still starting
    server_key: str | None
    dev_api_key: str | None

    def describe(self) -> str:
        return f"pid {self.pid}, {self.api_url}"


class UpLock:
    """The lock a running `smsq up` holds on its data directory."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._fd: int | None = None

    def acquire(self, attempts: int = 10) -> bool:
        """Take the lock; False if another `smsq up` holds it. Touches nothing but the lock
        file's existence. A few tries: a client probing the lock holds it for an instant."""
        self.data.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data.lock, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or attempt == attempts - 1:
                    os.close(fd)
                    return False
                time.sleep(0.05)
            else:
                self._fd = fd
                return True
        return False  # pragma: no cover (the loop returns)

    def record(self, **facts: Any) -> None:
        """Write what clients need to know (PID, URLs) into the held lock file."""
        assert self._fd is not None, "record() needs the lock"
        text = json.dumps({"pid": os.getpid(), **facts}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder(data: DataDir) -> dict[str, Any] | None:
    """What the `smsq up` holding the lock wrote ({} while it starts), or None if none runs."""
    try:
        fd = os.open(data.lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 65536, 0)
            try:
                facts = json.loads(text) if text else {}
            except ValueError:
                facts = {}
            return facts if isinstance(facts, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def running(data: DataDir) -> Instance | None:
    """The `smsq up` running on this data directory, or None."""
    facts = holder(data)
    if facts is None:
        return None
    return Instance(
        pid=int(facts.get("pid", 0)),
        api_url=str(facts.get("api_url", "")),
        carrier_url=str(facts.get("carrier_url", "")),
        dlr_allow_private=tuple(facts.get("dlr_allow_private", ())),
        dlr_deny=tuple(facts.get("dlr_deny", ())),
        redis_url=_read(data.redis_url),
        server_key=_read(data.secret_key),
        dev_api_key=dev_key_file(data).get("api_key"),
    )


def dev_key_file(data: DataDir) -> dict[str, str]:
    """The development key as kept in the data directory ({"id", "api_key"}), or {}."""
    text = _read(data.dev_key)
    if not text:
        return {}
    try:
        saved = json.loads(text)
    except ValueError:
        return {}
    return {k: str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def not_found(data: DataDir) -> NoInstanceError:
    return NoInstanceError(
        f"no running smsq found (looked for {data.lock}); "
        "start one with ./smsq up or set SMSQ_REDIS_URL"
    )


def find(settings: Settings) -> Instance | None:
    """The running instance these settings talk to: the data directory's `smsq up`, unless
    `SMSQ_REDIS_URL` names another system. NoInstanceError when nothing names a system."""
    data = DataDir.of(settings)
    instance = running(data)
    if instance is None:
        if settings.redis_url:
            return None
        raise not_found(data)
    if instance.redis_url is None:
        if settings.redis_url:
            return None
        raise NoInstanceError(
            f"the smsq up in {data.path} ({instance.describe()}) is still starting; try again"
        )
    if settings.redis_url and settings.redis_url != instance.redis_url:
        return None
    return instance


def client_settings(settings: Settings) -> Settings:
    """The settings of a client (CLI command, `Producer()`): what is set explicitly wins, the
    running instance fills the rest (Redis URL, server key, carrier URL, receipt allow and
    deny lists)."""
    instance = find(settings)
    if instance is None:
        return settings
    given = settings.model_fields_set
    update: dict[str, Any] = {"redis_url": instance.redis_url}
    if not settings.secret_key.get_secret_value() and instance.server_key:
        update["secret_key"] = SecretStr(instance.server_key)
    if "dlr_allow_private" not in given:
        update["dlr_allow_private"] = list(instance.dlr_allow_private)
    if "dlr_deny" not in given:
        update["dlr_deny"] = list(instance.dlr_deny)
    if "carrier_url" not in given and "sim_port" not in given and instance.carrier_url:
        update["carrier_url"] = instance.carrier_url
    return settings.model_copy(update=update)


def api_access(settings: Settings, api_url: str | None, api_key: str | None) -> tuple[str, str]:
    """(API URL, API key) for a command that calls the API: the ones given, else the running
    instance's URL and development key."""
    if api_url and api_key:
        return api_url, api_key
    instance = running(DataDir.of(settings))
    if api_url is None:
        if instance is not None and instance.api_url:
            api_url = instance.api_url
        elif {"public_url", "api_host", "api_port"} & settings.model_fields_set:
            api_url = settings.effective_public_url
        else:
            raise not_found(DataDir.of(settings))
    if api_key is None:
        if instance is None or instance.dev_api_key is None:
            raise NoInstanceError("no API key: pass --key or set SMSQ_API_KEY")
        api_key = instance.dev_api_key
    return api_url, api_key
