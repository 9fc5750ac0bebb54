"""The embedded Redis keeps its data private: a password, a 0700 directory, 0600 files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis

from worker.embedded_redis import EmbeddedRedis, write_private
from worker.redis_urls import redacted

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(directory: Path) -> dict[str, int]:
    """The permission bits of `directory` and everything below it, by relative path."""
    found = {".": mode(directory)}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            found[str(path.relative_to(directory))] = mode(path)
    return found


@pytest.fixture
def server(tmp_path: Path) -> EmbeddedRedis:
    return EmbeddedRedis(tmp_path / "redis")


def test_an_unauthenticated_client_is_refused(server: EmbeddedRedis) -> None:
    """Without the password nothing is read; the URL carries it, and redacted() hides it."""
    url = server.start()
    try:
        assert server.password
        assert url == f"redis://:{server.password}@127.0.0.1:{server.port}/0"
        assert server.password not in redacted(url)
        with redis.Redis.from_url(url) as client:
            client.set("smsq:test", "secret")
        with (
            redis.Redis(port=server.port) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.get("smsq:test")
        with (
            redis.Redis(port=server.port, password="guess") as guessing,
            pytest.raises(redis.AuthenticationError),
        ):
            guessing.get("smsq:test")
    finally:
        server.stop()


def test_the_password_is_kept_and_never_on_the_command_line(server: EmbeddedRedis) -> None:
    """The password lives in a 0600 file of the data directory, survives a restart, and is
    not in the server's command line (which every local user can read)."""
    server.start()
    try:
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        password = server.password
        assert password
        assert password.encode() not in cmdline
        assert server.password_file.read_text().strip() == password
    finally:
        server.stop()
    again = EmbeddedRedis(server.data_dir)
    again.start()
    try:
        assert again.password == password
    finally:
        again.stop()


def test_data_directory_is_0700_and_every_file_0600(server: EmbeddedRedis) -> None:
    """AOF files, the log, the password and the config are readable by their owner only;
    files an older run left world-readable are tightened at start."""
    server.data_dir.mkdir(parents=True)
    server.data_dir.chmod(0o755)
    old_log = server.data_dir / "redis.log"
    old_log.write_text("from an older smsq\n")
    old_log.chmod(0o644)
    url = server.start()
    try:
        with redis.Redis.from_url(url) as client:
            client.set("smsq:test", "x")
            client.bgrewriteaof()
        found = modes_under(server.data_dir)
        assert "appendonlydir" in found
        assert any(name.endswith(".aof") for name in found)
        dirs = {name for name in found if (server.data_dir / name).is_dir()}
        assert {name: found[name] for name in dirs} == dict.fromkeys(dirs, 0o700)
        files = set(found) - dirs
        assert {"password", "redis.log", "embedded.conf"} <= files
        assert {name: found[name] for name in files} == dict.fromkeys(files, 0o600)
    finally:
        server.stop()


def test_write_private_tightens_an_existing_file(tmp_path: Path) -> None:
    """The file `smsq up` notes its Redis URL in (with the password) ends 0600 even if it
    existed readable."""
    path = tmp_path / "redis.url"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "redis://:pw@127.0.0.1:1/0")
    assert (mode(path), path.read_text()) == (0o600, "redis://:pw@127.0.0.1:1/0")


def test_the_url_is_known_before_the_server_starts(tmp_path: Path) -> None:
    """A harness that hands the URL to its children before starting the server (the chaos
    system does) gets the password in it, and it is the one the server then asks for."""
    server = EmbeddedRedis(tmp_path / "redis", port=0)
    early = server.url
    assert server.password
    assert f":{server.password}@" in early
    started = server.start()
    try:
        assert started.split("@")[0] == early.split("@")[0]
        with redis.Redis.from_url(started) as client:
            assert client.ping()
    finally:
        server.stop()
