"""The parts a task needs are built once per worker process, not per task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from worker import tasks


def test_the_receipt_engine_is_built_once_per_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """One receipt engine per process: built on the first drain, rebuilt in a forked child."""
    built: list[object] = []

    def build(rt: object) -> object:
        built.append(rt)
        return object()

    fake = SimpleNamespace(parts={})
    monkeypatch.setattr(tasks, "runtime", lambda: fake)
    monkeypatch.setattr(tasks, "build_receipt_engine", build)
    first, second = tasks._engine(), tasks._engine()
    assert first is second
    assert built == [fake]
    other = SimpleNamespace(parts={})
    monkeypatch.setattr(tasks, "runtime", lambda: other)  # a forked child's new runtime
    assert tasks._engine() is not first
    assert built == [fake, other]
