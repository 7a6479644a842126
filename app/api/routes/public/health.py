"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from app.api.deps import ServicesDep
from app.api.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def ready(services: ServicesDep) -> JSONResponse:
    ok = await run_in_threadpool(services.ready)
    return JSONResponse({"status": "ready" if ok else "unavailable"}, 200 if ok else 503)
