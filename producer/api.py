"""The HTTP API application (FastAPI): `uvicorn --factory producer.api:create_app`."""

from __future__ import annotations

from fastapi import FastAPI

from producer import errors
from producer.responses import JsonResponse
from producer.routes import batch, carriers, health, metrics, mo, otp, sms
from producer.services import Services, build_services
from worker.settings import Settings, get_settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """The API with its services built from `settings` (the environment by default)."""
    app = FastAPI(
        title="smsq",
        version="0.1.0",
        description="Send SMS and OTP codes at volume, with signed delivery receipts.",
        default_response_class=JsonResponse,
    )
    app.state.services = services or build_services(settings or get_settings())
    errors.install(app)
    app.include_router(batch.router)
    app.include_router(sms.router)
    app.include_router(otp.router)
    app.include_router(carriers.router)
    app.include_router(mo.router)
    app.include_router(health.router)
    metrics.install(app)  # /metrics, logs, request and OTP counts (after the routes)
    return app
