"""Hostile receipt endpoints on loopback, for the isolation test and benchmark.

`hostile_server(dribble)` answers `HTTP/1.1 200 OK` and then one byte every 2 s (each read
succeeds, so only a whole-attempt deadline stops it); `hostile_server(silent)` accepts
connections and never answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Talk = Callable[[socket.socket, threading.Event], None]


@contextmanager
def hostile_server(talk: Talk) -> Iterator[int]:
    """A TCP server on loopback running `talk` on every connection, in a thread each; yields
    its port, and stops every thread whatever happens."""
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
    """A status line, then a byte every 2 s, never a whole answer."""
    with connection:
        try:
            connection.recv(65_536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(2.0):
                connection.sendall(b"X")
        except OSError:
            return


def silent(connection: socket.socket, stop: threading.Event) -> None:
    """Nothing, ever (until the server stops)."""
    with connection:
        stop.wait(600)
