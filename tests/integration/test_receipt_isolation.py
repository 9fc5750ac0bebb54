"""One tenant's bad endpoints delay no one else's receipts (real workers, real sockets).

Beside a healthy receiver, two hostile endpoints: one answers `HTTP/1.1 200 OK` and then one
byte every 2 s (each read succeeds, so only a whole-attempt deadline stops it), one accepts
connections and never answers. Their receipts hold their own drains only: every healthy
receipt arrives while theirs still wait, carrier receipts keep being applied, and `GET
/sms/{id}` says why the bad ones wait.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

from tests.integration.stack import Stack, running_stack, wait_for

pytestmark = pytest.mark.integration

HEALTHY = 100  # level 3: two receipts each
HOSTILE = 10  # per bad endpoint
LANES = ["otp,normal,bulk", "dlr", "carrier-dlr"]  # as smsq up runs them


@contextmanager
def hostile_server(talk: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A TCP server on loopback running `talk` on every connection, in a thread each."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=talk, args=(connection, stop), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(5)


def dribble(connection: socket.socket, stop: threading.Event) -> None:
    with connection:
        try:
            connection.recv(65_536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(2.0):
                connection.sendall(b"X")
        except OSError:
            return


def silent(connection: socket.socket, stop: threading.Event) -> None:
    with connection:
        stop.wait(60)


@pytest.fixture(scope="module")
def stack(redis_server_url: str) -> Iterator[Stack]:
    with running_stack(
        redis_server_url, worker_queues=LANES, worker_env={"SMSQ_DLR_TIMEOUT": "2"}
    ) as running:
        yield running


def send(stack: Stack, url: str, count: int) -> list[str]:
    body = {"to": "+14155552671", "content": "hi", "dlr": True, "dlr-level": 3, "dlr-url": url}
    ids = []
    for _ in range(count):
        reply = stack.send(body)
        assert reply.status_code == 202, reply.text
        ids.append(reply.json()["id"])
    return ids


def level_one_why(stack: Stack, message_id: str) -> dict[str, Any] | None:
    """The message's level-1 receipt once it says why it waits."""
    view: dict[str, Any] = stack.message(message_id)["receipts"]["1"]
    return view if view["why"] else None


def test_hostile_endpoints_delay_no_one_else(stack: Stack) -> None:
    """Every healthy receipt arrives while the hostile endpoints' receipts still wait; the
    hostile ones show why they wait and end up backed off as a whole."""
    with hostile_server(dribble) as dribbler, hostile_server(silent) as mute:
        slow = send(stack, f"http://127.0.0.1:{dribbler}/dlr", HOSTILE)
        dead = send(stack, f"http://127.0.0.1:{mute}/dlr", HOSTILE)
        fine = send(stack, f"{stack.receiver_url}/dlr", HEALTHY)
        arrived = stack.receiver.wait_for(2 * HEALTHY, timeout=90)
        assert sorted((r.json()["id"], r.json()["level"]) for r in arrived) == sorted(
            (m, level) for m in fine for level in (1, 2)
        )
        # Carrier receipts were applied for every message, the hostile ones' too.
        for message_id in slow + dead:
            stack.wait_status(message_id, {"delivered"}, timeout=30)
        for message_id in (slow[0], dead[0]):
            view = wait_for(
                partial(level_one_why, stack, message_id), 60,
                "the hostile receipt never said why it waits",
            )  # fmt: skip
            assert view["state"] != "sent"
            assert view["why"] == "timeout after 2 s"
        waiting = wait_for(
            lambda: "backing off" in (stack.message(slow[0])["receipts"]["1"]["waiting"] or ""),
            60,
            "the dribbling endpoint was never backed off",
        )
        assert waiting
