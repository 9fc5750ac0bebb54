"""The engine's ceiling: a no-op Celery task with smsq's own Celery settings."""

from __future__ import annotations

from worker.celery_app import create_app

app = create_app()


@app.task(name="bench.noop")
def noop(_payload: str) -> None:
    """Nothing at all: what is left is Celery and Redis."""
