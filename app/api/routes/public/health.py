"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.api.schemas import HealthResponse
from app.errors import ServiceUnavailableError

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready")
async def ready(services: ServicesDep) -> HealthResponse:
    """200 while the database answers and an issuing CA is loaded; else a 503 problem."""
    if not await run_in_threadpool(services.ready):
        raise ServiceUnavailableError("the database does not answer or no issuing CA is loaded")
    return HealthResponse(status="ready")
