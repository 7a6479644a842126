"""The two ASGI apps around one Services: each listener's route list is decided here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp

from app.api.deps import get_peer
from app.api.limits import BodySizeLimit
from app.api.ocsp_fast import OCSPFastPath
from app.api.problems import install_problem_handlers
from app.api.routes.mtls import admin
from app.api.routes.public import ca_files, certificates, crls, health, ocsp
from app.services.container import Services

PUBLIC_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    ca_files.router,
    crls.router,
    ocsp.router,
    certificates.router,
)
MTLS_ROUTERS: tuple[APIRouter, ...] = (admin.router,)


def _app(services: Services, title: str, routers: tuple[APIRouter, ...], **kwargs: Any) -> FastAPI:
    app = FastAPI(title=title, version="0.1.0", **kwargs)
    app.state.services = services
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodySizeLimit)
    return app


def create_public_app(services: Services) -> FastAPI:
    """CA files, CRLs, OCSP, certificate status, enrollment with a token, health."""
    return _app(services, "MintCA public API", PUBLIC_ROUTERS)


def create_public_asgi(services: Services) -> ASGIApp:
    """The public app behind the OCSP fast path: what the public listener serves."""
    return OCSPFastPath(create_public_app(services), services.ocsp, services.clock)


def create_mtls_app(services: Services) -> FastAPI:
    """The admin API and renewal; every route first checks the peer certificate against the
    database (unknown, revoked, on hold or expired: 403)."""
    return _app(services, "MintCA mTLS API", MTLS_ROUTERS, dependencies=[Depends(get_peer)])
