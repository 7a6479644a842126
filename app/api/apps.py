"""The two ASGI apps around one Services: each listener's route list is decided here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp

from app.api.deps import (
    get_peer,
    reject_nul_in_query,
    require_declared_role,
    require_json_writes,
)
from app.api.enroll_fast import EnrollFastAnswers, EnrollFastPath
from app.api.limits import BodySizeLimit
from app.api.ocsp_fast import OCSPFastPath
from app.api.problems import install_acme_problem_handlers, install_problem_handlers
from app.api.ratelimit import EnrollmentLimiter
from app.api.request_metrics import RequestMetrics
from app.api.revoke_fast import RevokeFastPath
from app.api.routes.acme import accounts as acme_accounts
from app.api.routes.acme import admin as acme_admin
from app.api.routes.acme import directory as acme_directory
from app.api.routes.acme import orders as acme_orders
from app.api.routes.acme.common import AcmeHeaders
from app.api.routes.mtls import admin, docs, renew, roles
from app.api.routes.public import ca_files, certificates, crls, health, metrics, ocsp
from app.services.container import Services

PUBLIC_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    ca_files.router,
    crls.router,
    ocsp.router,
    certificates.router,
    metrics.router,
)
MTLS_ROUTERS: tuple[APIRouter, ...] = (
    admin.router,
    docs.router,
    roles.router,
    renew.router,
    acme_admin.router,
)
ACME_ROUTERS: tuple[APIRouter, ...] = (
    acme_directory.router,
    acme_accounts.router,
    acme_orders.router,
)


def _app(
    services: Services,
    title: str,
    routers: tuple[APIRouter, ...],
    listener: str | None,
    **kwargs: Any,
) -> FastAPI:
    """`listener` names the app in the latency histogram; None leaves timing to a layer
    outside the app."""
    dependencies = [*kwargs.pop("dependencies", []), Depends(reject_nul_in_query)]
    app = FastAPI(title=title, version="0.1.0", dependencies=dependencies, **kwargs)
    app.state.services = services
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodySizeLimit)
    if listener is not None:
        # Added last, so outermost (after Starlette's error handler): it times whole requests.
        app.add_middleware(RequestMetrics, listener=listener)
    return app


def create_public_app(services: Services, *, timed: bool = True) -> FastAPI:
    """CA files, CRLs, OCSP, certificate status, enrollment with a token, health; ACME under
    /acme."""
    app = _app(services, "MintCA public API", PUBLIC_ROUTERS, "public" if timed else None)
    app.mount("/acme", create_acme_app(services))
    return app


def enroll_answers(services: Services) -> EnrollFastAnswers:
    """The enrollment fast path's answers, with the rate limiter it shares with the route."""
    return EnrollFastAnswers(services, EnrollmentLimiter(services.settings))


def create_public_asgi(services: Services, answers: EnrollFastAnswers | None = None) -> ASGIApp:
    """What the public listener serves: the public app behind the enrollment and OCSP fast
    paths, all timed by one RequestMetrics layer (answers from the cache are requests too).
    `answers` are the ones the listener's HTTP protocol also uses, to share one limiter."""
    answers = answers or enroll_answers(services)
    public = create_public_app(services, timed=False)
    public.state.enroll_limiter = answers.limiter  # one for the fast paths and the route
    fast_path = OCSPFastPath(public, services.ocsp, services.clock)
    return RequestMetrics(EnrollFastPath(fast_path, answers), listener="public")


def create_acme_app(services: Services) -> FastAPI:
    """RFC 8555 under /acme: its own problem types (urn:ietf:params:acme:error:*) and a fresh
    Replay-Nonce on every answer, errors included."""
    app = FastAPI(
        title="MintCA ACME",
        version="0.1.0",
        openapi_url=None,
        docs_url=None,
        dependencies=[Depends(reject_nul_in_query)],
    )
    app.state.services = services
    install_acme_problem_handlers(app)
    for router in ACME_ROUTERS:
        app.include_router(router)
    app.add_middleware(AcmeHeaders)
    return app


def create_mtls_asgi(services: Services) -> ASGIApp:
    """What the mtls listener serves: the mtls app behind the revocation fast path, both
    timed by one RequestMetrics layer."""
    fast_path = RevokeFastPath(create_mtls_app(services, timed=False), services)
    return RequestMetrics(fast_path, listener="mtls")


def create_mtls_app(services: Services, *, timed: bool = True) -> FastAPI:
    """The admin API and renewal; every route first checks the peer certificate against the
    database (unknown, revoked, on hold or expired: 403), then the role the route declares
    (admin when it declares none: 403), then refuses non-JSON writes (415).
    FastAPI's own doc pages skip route dependencies, so they are off here and
    app.api.routes.mtls.docs serves them as ordinary routes."""
    return _app(
        services,
        "MintCA mTLS API",
        MTLS_ROUTERS,
        "mtls" if timed else None,
        dependencies=[
            Depends(get_peer),
            Depends(require_declared_role),
            Depends(require_json_writes),
        ],
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
