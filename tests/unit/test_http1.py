"""worker.http1 against a real server on loopback: connections are kept alive when (and only
when) the answer allows it, and a kept-alive connection the server closed is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from worker import http1

Answering = Callable[[asyncio.StreamWriter, int], Awaitable[bool]]  # False: close after it


class Server:
    """Counts connections and requests; `answer` writes each answer."""

    def __init__(self, answer: Answering) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
                self.requests += 1
                if not await self.answer(writer, self.requests):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def whole(writer: asyncio.StreamWriter, _: int) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()
    return True


async def body_later(writer: asyncio.StreamWriter, _: int) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(b"ok")
    await writer.drain()
    return True


async def closing(writer: asyncio.StreamWriter, _: int) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()
    return False


async def http10(writer: asyncio.StreamWriter, _: int) -> bool:
    writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await writer.drain()
    return False


async def post_many(server: Server, count: int) -> list[int]:
    pool = http1.Pool("127.0.0.1", server.port)
    statuses = []
    try:
        for _ in range(count):
            answer = await pool.exchange("POST", "/r", [("host", "receiver")], b"{}")
            assert await answer.drain(5.0)
            statuses.append(answer.status)
    finally:
        pool.close()
    return statuses


@pytest.mark.parametrize("answer", [whole, body_later], ids=["body-with-head", "body-later"])
def test_one_connection_carries_every_request(answer: Answering) -> None:
    async def run() -> tuple[list[int], int]:
        async with Server(answer) as server:
            return await post_many(server, 10), server.connections

    statuses, connections = asyncio.run(run())
    assert statuses == [200] * 10
    assert connections == 1


@pytest.mark.parametrize("answer", [closing, http10], ids=["connection-close", "http-1.0"])
def test_an_answer_that_ends_the_connection_is_not_reused(answer: Answering) -> None:
    async def run() -> tuple[list[int], int]:
        async with Server(answer) as server:
            return await post_many(server, 3), server.connections

    statuses, connections = asyncio.run(run())
    assert statuses == [200] * 3
    assert connections == 3


def test_a_kept_connection_the_server_closed_is_replaced_without_an_error() -> None:
    """The server drops every connection after its second answer, without saying so."""

    async def two_then_drop(writer: asyncio.StreamWriter, count: int) -> bool:
        await whole(writer, count)
        return count % 2 == 1

    async def run() -> tuple[list[int], int, int]:
        async with Server(two_then_drop) as server:
            pool = http1.Pool("127.0.0.1", server.port)
            statuses = []
            try:
                for _ in range(4):
                    answer = await pool.exchange("POST", "/r", [("host", "receiver")], b"{}")
                    assert await answer.drain(5.0)
                    statuses.append(answer.status)
                    await asyncio.sleep(0.05)  # lets the close reach us (either way is correct)
            finally:
                pool.close()
            return statuses, server.requests, server.connections

    statuses, requests, connections = asyncio.run(run())
    assert statuses == [200] * 4
    assert requests == 4  # nothing was sent twice
    assert connections == 2
