"""Prometheus metrics (SPEC: the same totals whichever worker answers)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.services.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    """The Prometheus text format: database totals read now, and every worker's events."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
