"""The mtls listener's documentation and its CSRF guard: the docs pass the same per-request
peer check and role as every other route, load no third-party script, carry a strict CSP, and
every state-changing route refuses anything but application/json (415)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.apps import create_mtls_app
from app.api.routes.mtls.docs import DOCS_CSP
from app.services.container import Services
from tests.api.test_routes import route_table

pytestmark = pytest.mark.db

Problem = Callable[..., dict[str, Any]]
DOC_PATHS = [
    "/openapi.json",
    "/docs",
    "/docs/init.js",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui.css",
]


def issue(services: Services, csrs: Any, profile: str, name: str = "a.zone") -> x509.Certificate:
    created = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    return services.enrollment.enroll(
        token=created.token, csr_data=csrs.pem_for(name), profile=profile
    ).certificate


def pem_of(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode()


def audit_count(services: Services) -> int:
    with services.db.read() as session:
        return int(session.execute(text("SELECT count(*) FROM audit_log")).scalar_one())


@pytest.fixture
def refused_peer(
    services: Services, csrs: Any, mtls_client_for: Callable[[str], TestClient]
) -> Callable[[str], TestClient]:
    """A client of the mtls app whose certificate passed the handshake but gets nothing."""

    def make(kind: str) -> TestClient:
        if kind == "no certificate":
            return TestClient(create_mtls_app(services))
        if kind in ("client", "peer"):
            return mtls_client_for(pem_of(issue(services, csrs, kind)))
        reason = {"revoked admin": "keyCompromise", "admin on hold": "certificateHold"}[kind]
        certificate = issue(services, csrs, "admin", "second-admin")
        services.revocation.revoke(
            format(certificate.serial_number, "x"), reason=reason, invalidity_date=None, actor="t"
        )
        return mtls_client_for(pem_of(certificate))

    return make


@pytest.mark.parametrize(
    "kind", ["no certificate", "client", "peer", "revoked admin", "admin on hold"]
)
def test_docs_are_refused_without_a_valid_role_certificate(
    kind: str, refused_peer: Callable[[str], TestClient], problem: Problem
) -> None:
    client = refused_peer(kind)

    for path in DOC_PATHS:
        try:
            problem(client.get(path), 403)
        except AssertionError as exc:
            raise AssertionError(f"{kind} GET {path}: {exc}") from None


def test_fastapi_builtin_doc_pages_are_not_served(admin_client: TestClient) -> None:
    for path in ("/redoc", "/docs/oauth2-redirect", "/docs/swagger-ui.js.map", "/docs/x"):
        assert admin_client.get(path).status_code == 404, path


def test_docs_page_loads_only_local_assets_under_a_strict_csp(admin_client: TestClient) -> None:
    page = admin_client.get("/docs")

    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == DOCS_CSP
    assert "'unsafe-inline'" not in DOCS_CSP
    assert "http" not in DOCS_CSP
    assert "<script>" not in page.text, "inline script: the CSP would block it"
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert references, page.text
    assert all(r.startswith("/") and not r.startswith("//") for r in references), references
    for reference in references:
        asset = admin_client.get(reference)
        assert asset.status_code == 200, f"{reference}: {asset.text[:200]}"
        assert asset.headers["content-security-policy"] == DOCS_CSP, reference
        assert asset.headers["x-content-type-options"] == "nosniff", reference
    bundle = admin_client.get("/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript"), bundle.headers
    assert "SwaggerUIBundle" in bundle.text
    assert admin_client.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert "/openapi.json" in admin_client.get("/docs/init.js").text


# --- CSRF: writes are application/json only ---------------------------------------------------


def write_routes() -> list[tuple[str, str]]:
    """Every state-changing (method, path) of the mtls app, taken from the app itself."""
    table = route_table(create_mtls_app(object()))  # type: ignore[arg-type]  # routes only
    return sorted((m, p) for m, p in table if m not in ("GET", "HEAD", "OPTIONS"))


FORGEABLE = [
    pytest.param(
        {
            "content": b"reason=keyCompromise",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        id="urlencoded form",
    ),
    pytest.param({"files": {"reason": (None, "keyCompromise")}}, id="multipart form"),
    pytest.param(
        {"content": b'{"reason":"keyCompromise"}', "headers": {"Content-Type": "text/plain"}},
        id="text/plain with a JSON body",
    ),
    pytest.param({}, id="no body, no content type"),
]


@pytest.mark.parametrize("request_kwargs", FORGEABLE)
def test_writes_without_json_are_415_and_change_nothing(
    request_kwargs: dict[str, Any],
    admin_client: TestClient,
    services: Services,
    csrs: Any,
    problem: Problem,
) -> None:
    certificate = issue(services, csrs, "peer")
    serial = format(certificate.serial_number, "x")
    services.revocation.revoke(serial, reason="certificateHold", invalidity_date=None, actor="test")
    before = audit_count(services)
    routes = write_routes()
    assert ("POST", "/admin/certificates/{serial}/unhold") in routes, routes

    for method, path in routes:
        response = admin_client.request(method, path.format(serial=serial), **request_kwargs)
        try:
            problem(response, 415, "unsupported-media-type")
        except AssertionError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from None

    assert audit_count(services) == before
    assert services.certificates.get(serial).revocation_reason == "certificateHold"


def test_json_with_a_charset_is_accepted(
    admin_client: TestClient, services: Services, csrs: Any
) -> None:
    serial = format(issue(services, csrs, "peer").serial_number, "x")
    services.revocation.revoke(serial, reason="certificateHold", invalidity_date=None, actor="test")

    response = admin_client.post(
        f"/admin/certificates/{serial}/unhold",
        content=b"{}",
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "good", response.text


def test_a_peer_without_the_role_learns_403_not_415(
    services: Services, csrs: Any, mtls_client_for: Callable[[str], TestClient], problem: Problem
) -> None:
    client = mtls_client_for(pem_of(issue(services, csrs, "client")))

    response = client.post(
        "/admin/tokens",
        content=b"names=a",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    problem(response, 403)
