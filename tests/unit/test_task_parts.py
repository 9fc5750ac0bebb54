"""The parts a task needs are built once per worker process, not per task."""

from __future__ import annotations

from types import SimpleNamespace

import fakeredis
import pytest

from tests.unit.test_sending import Publisher
from worker import tasks
from worker.receipt_batches import ReceiptBatches
from worker.settings import Settings
from worker.store import Store


def test_receipt_batches_are_built_once_per_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    client = fakeredis.FakeRedis(decode_responses=True)
    fake = SimpleNamespace(
        parts={}, store=Store(client), publisher=Publisher(), settings=Settings()
    )
    monkeypatch.setattr(tasks, "runtime", lambda: fake)

    def counting(*args: object, **kwargs: object) -> object:
        built.append(args)
        return ReceiptBatches(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tasks, "ReceiptBatches", counting)
    first, second = tasks._batches(), tasks._batches()
    assert first is second
    assert len(built) == 1
    other = SimpleNamespace(
        parts={}, store=Store(client), publisher=Publisher(), settings=Settings()
    )
    monkeypatch.setattr(tasks, "runtime", lambda: other)  # a forked child's new runtime
    assert tasks._batches() is not first
    assert len(built) == 2
