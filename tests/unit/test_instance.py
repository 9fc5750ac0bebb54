"""Finding a running `smsq up` (`producer.instance`), the development key, and what the CLI, the
library and a second `smsq up` do when there is one, or none."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from producer import cli, devkey
from producer.instance import (
    DataDir,
    NoInstanceError,
    UpLock,
    api_access,
    client_settings,
    holder,
    running,
)
from producer.library import Producer
from producer.up import UpOptions, up
from worker.embedded_redis import free_port, write_private
from worker.keys import KeyStore
from worker.settings import Settings

REDIS_URL = "redis://127.0.0.1:6399/0"
API_URL = "http://127.0.0.1:8123"


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / ".smsq")


@pytest.fixture
def instance(data: DataDir) -> Iterator[UpLock]:
    """What a running `smsq up` leaves in its data directory, its lock held."""
    lock = UpLock(data)
    assert lock.acquire()
    lock.record(api_url=API_URL, carrier_url="http://127.0.0.1:8026", dlr_allow_private=["::1/128"])
    write_private(data.redis_url, REDIS_URL)
    write_private(data.secret_key, "server-key-of-the-instance")
    write_private(data.dev_key, json.dumps({"id": "k1", "api_key": "smsq_dev"}))
    try:
        yield lock
    finally:
        lock.release()


def settings_in(data: DataDir, **given: object) -> Settings:
    return Settings(data_dir=str(data.path), **given)  # type: ignore[arg-type]


class TestDiscovery:
    def test_nothing_running_and_no_redis_url_is_an_error_naming_the_lock(
        self, data: DataDir
    ) -> None:
        """Never a silent fall back to redis://127.0.0.1:6379."""
        with pytest.raises(NoInstanceError) as raised:
            client_settings(settings_in(data))
        assert str(raised.value) == (
            f"no running smsq found (looked for {data.lock}); "
            "start one with ./smsq up or set SMSQ_REDIS_URL"
        )

    def test_files_left_by_a_dead_instance_are_ignored(self, data: DataDir) -> None:
        """Without the lock held, redis.url and up.lock mean nothing."""
        lock = UpLock(data)
        assert lock.acquire()
        lock.record(api_url=API_URL)
        write_private(data.redis_url, REDIS_URL)
        lock.release()
        assert running(data) is None
        with pytest.raises(NoInstanceError):
            client_settings(settings_in(data))

    def test_the_running_instance_fills_what_is_not_given(
        self, data: DataDir, instance: UpLock
    ) -> None:
        """Redis URL, server key, carrier URL and receipt allow-list come from the instance."""
        found = client_settings(settings_in(data))
        assert found.redis_url == REDIS_URL
        assert found.secret_key.get_secret_value() == "server-key-of-the-instance"
        assert found.carrier_url == "http://127.0.0.1:8026"
        assert found.dlr_allow_private == ["::1/128"]

    def test_explicit_settings_win(self, data: DataDir, instance: UpLock) -> None:
        """What the caller set stays; an explicit SMSQ_REDIS_URL of another system ignores
        the instance altogether."""
        given = settings_in(
            data, secret_key=SecretStr("mine"), dlr_allow_private=[], carrier_url="http://c"
        )
        found = client_settings(given)
        assert (found.secret_key.get_secret_value(), found.dlr_allow_private) == ("mine", [])
        assert found.carrier_url == "http://c"
        other = settings_in(data, redis_url="redis://elsewhere:6379/0")
        assert client_settings(other) == other

    def test_no_instance_but_a_redis_url_is_fine(self, data: DataDir) -> None:
        given = settings_in(data, redis_url=REDIS_URL)
        assert client_settings(given) == given

    def test_a_starting_instance_says_so(self, data: DataDir) -> None:
        """Lock held, Redis not noted yet: a one-line error, not a guess."""
        lock = UpLock(data)
        assert lock.acquire()
        try:
            lock.record(api_url=API_URL)
            with pytest.raises(NoInstanceError, match="still starting"):
                client_settings(settings_in(data))
        finally:
            lock.release()

    def test_api_access(self, data: DataDir, instance: UpLock) -> None:
        """Given URL and key win; else the instance's URL and development key."""
        settings = settings_in(data)
        assert api_access(settings, None, None) == (API_URL, "smsq_dev")
        assert api_access(settings, "http://x", "k") == ("http://x", "k")
        instance.release()
        with pytest.raises(NoInstanceError, match="looked for"):
            api_access(settings, None, "k")
        with pytest.raises(NoInstanceError, match="no API key"):
            api_access(settings, "http://x", None)
        assert api_access(settings_in(data, api_port=9000), None, "k") == (
            "http://127.0.0.1:9000",
            "k",
        )


class TestLock:
    def test_one_holder_at_a_time(self, data: DataDir, instance: UpLock) -> None:
        """A second lock on the same data directory is refused; the holder's facts are read."""
        assert not UpLock(data).acquire(attempts=2)
        facts = holder(data)
        assert facts is not None
        assert facts["api_url"] == API_URL
        instance.release()
        assert holder(data) is None
        again = UpLock(data)
        assert again.acquire()
        again.release()

    def test_private_files_are_0600(self, data: DataDir, instance: UpLock) -> None:
        for path in (data.lock, data.redis_url, data.secret_key, data.dev_key):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


class TestSecondUp:
    def test_refuses_at_once_and_touches_nothing(
        self, data: DataDir, instance: UpLock, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second `smsq up` names the running one's PID and URL, exits 1, and leaves its
        Redis URL, metrics and logs alone."""
        (data.metrics).mkdir()
        (data.metrics / "counter_1.db").write_bytes(b"x")
        before = {p: p.read_bytes() for p in data.path.rglob("*") if p.is_file()}
        assert up(settings_in(data), UpOptions()) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"already running in {data.path} (pid " in err
        assert API_URL in err
        assert {p: p.read_bytes() for p in data.path.rglob("*") if p.is_file()} == before
        assert not (data.path / "redis").exists()

    @pytest.mark.parametrize("which", ["api", "sim"])
    def test_a_busy_port_is_named_before_anything_starts(
        self, data: DataDir, which: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The API's or the simulator's port taken: one line naming it, exit 1, no Redis
        started, the lock released."""
        with socket.create_server(("127.0.0.1", 0)) as busy:
            port = busy.getsockname()[1]
            ports = {"api": (port, free_port()), "sim": (free_port(), port)}[which]
            settings = settings_in(data, api_port=ports[0], sim_port=ports[1])
            assert up(settings, UpOptions()) == 1
        err = capsys.readouterr().err.strip()
        what = {"api": "API", "sim": "carrier simulator"}[which]
        assert err.startswith(f"smsq: port {port} ({what}")
        assert "\n" not in err
        assert not (data.path / "redis").exists()
        assert holder(data) is None


class TestDevKey:
    def test_kept_across_starts_and_rotated(self, data: DataDir) -> None:
        """The same key and secret every time; rotate makes a new one and revokes the old."""
        keys = KeyStore(fakeredis.FakeRedis(decode_responses=True))
        first = devkey.ensure(keys, data)
        assert devkey.ensure(keys, data) == first
        assert [k.name for k in keys.list()] == ["smsq-up"]
        assert stat.S_IMODE(data.dev_key.stat().st_mode) == 0o600
        rotated = devkey.rotate(keys, data)
        assert rotated.api_key != first.api_key
        assert keys.authenticate(first.api_key) is None
        assert devkey.ensure(keys, data) == rotated

    def test_a_key_gone_from_redis_is_made_again(self, data: DataDir) -> None:
        """A fresh Redis (its data deleted) gets a fresh key, not a dead one."""
        first = devkey.ensure(KeyStore(fakeredis.FakeRedis(decode_responses=True)), data)
        again = devkey.ensure(KeyStore(fakeredis.FakeRedis(decode_responses=True)), data)
        assert again.api_key != first.api_key


class TestCommandsWithoutAnInstance:
    @pytest.mark.parametrize(
        "args",
        [
            ["status"], ["keys", "list"], ["keys", "rotate"], ["send", "+14155552671", "hi"],
            ["otp", "send", "+14155552671"], ["otp", "verify", "123456", "--id", "x"],
            ["dlr", "replay", "abc"], ["carriers", "check"], ["batch", "status", "b1"],
        ],
    )  # fmt: skip
    def test_one_line_naming_what_was_looked_for(self, tmp_path: Path, args: list[str]) -> None:
        """Every command that needs the system says in one line that none runs; exit 1."""
        env = {"SMSQ_DATA_DIR": str(tmp_path / ".smsq")}
        result = CliRunner().invoke(cli.app, args, env=env)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"smsq: no running smsq found (looked for {tmp_path / '.smsq' / 'up.lock'}); "
            "start one with ./smsq up or set SMSQ_REDIS_URL\n"
        )

    def test_the_library_raises_the_same(self, tmp_path: Path) -> None:
        with pytest.raises(NoInstanceError, match="no running smsq found"):
            Producer(settings=Settings(data_dir=str(tmp_path)))

    def test_an_unreachable_api_is_one_line(self) -> None:
        """`smsq send` to a port nobody listens on: one line naming the API, no traceback."""
        url = f"http://127.0.0.1:{free_port()}"
        result = CliRunner().invoke(
            cli.app, ["send", "+14155552671", "hi", "--api-url", url, "--key", "k"]
        )
        assert result.exit_code == 1
        assert result.output == (
            f"smsq: cannot reach the API at {url}/: ConnectError [Errno 111] Connection refused\n"
        )

    def test_unreachable_redis_is_one_line(self) -> None:
        env = {"SMSQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
        result = CliRunner().invoke(cli.app, ["keys", "list"], env=env)
        assert result.exit_code == 1
        assert result.output.startswith("smsq: Redis does not answer: ")
        assert result.output.count("\n") == 1
