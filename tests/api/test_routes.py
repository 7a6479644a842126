"""What each listener serves: the route lists (architecture), errors of the router itself,
health and readiness, CA files, the OpenAPI documents, and the public certificate status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.apps import create_mtls_app, create_public_app
from app.clock import FixedClock
from app.config import Settings
from app.db.engine import Database
from app.services.container import Services
from app.services.setup import InitReport

PEM_FILE = "application/x-pem-file"
PKIX_CERT = "application/pkix-cert"
DOC_ROUTES = {
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/docs/init.js",  # the mtls listener serves Swagger UI itself (no CDN)
    "/docs/{asset}",
}


# --- Route lists ----------------------------------------------------------------------------------


def route_table(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, routers included (FastAPI 0.16x keeps included
    routers as lazy entries of `app.routes`; `iter_route_contexts` flattens them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return {
        (method, route.path)
        for route in routes
        for method in (getattr(route, "methods", None) or {"WEBSOCKET"})
        if method != "HEAD"
    }


def build_apps() -> dict[str, FastAPI]:
    # The route list does not depend on Services: a placeholder keeps this test pure.
    placeholder = cast(Services, object())
    return {"public": create_public_app(placeholder), "mtls": create_mtls_app(placeholder)}


def not_built(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"README 'Not built yet': {reason}")


SPEC_ROUTES = [
    pytest.param("public", "GET", "/health", id="public GET /health"),
    pytest.param("public", "GET", "/ready", id="public GET /ready"),
    pytest.param("public", "GET", "/ca/root.pem", id="public GET /ca/root.pem"),
    pytest.param("public", "GET", "/ca/chain.pem", id="public GET /ca/chain.pem"),
    pytest.param("public", "GET", "/ca/{name}.crt", id="public GET /ca/{ca_id}.crt"),
    pytest.param("public", "GET", "/crl/{ca_id}.crl", id="public GET /crl/{ca_id}.crl"),
    pytest.param("public", "GET", "/crl/{ca_id}.pem", id="public GET /crl/{ca_id}.pem"),
    pytest.param("public", "GET", "/crl/{ca_id}-delta.crl", id="public GET delta crl"),
    pytest.param("public", "POST", "/ocsp", id="public POST /ocsp"),
    pytest.param("public", "GET", "/ocsp/{encoded:path}", id="public GET /ocsp/{request}"),
    pytest.param("public", "POST", "/v1/certificates", id="public POST /v1/certificates"),
    pytest.param("public", "GET", "/v1/certificates/{serial}/status", id="public GET status"),
    pytest.param("public", "GET", "/openapi.json", id="public GET /openapi.json"),
    pytest.param("public", "GET", "/docs", id="public GET /docs"),
    pytest.param("public", "GET", "/metrics", id="public GET /metrics"),
    pytest.param("mtls", "POST", "/admin/tokens", id="mtls POST /admin/tokens"),
    pytest.param("mtls", "GET", "/admin/certificates", id="mtls GET /admin/certificates"),
    pytest.param("mtls", "GET", "/admin/certificates/{serial}", id="mtls GET certificate"),
    pytest.param("mtls", "POST", "/admin/certificates/{serial}/revoke", id="mtls POST revoke"),
    pytest.param("mtls", "POST", "/admin/certificates/{serial}/unhold", id="mtls POST unhold"),
    pytest.param("mtls", "GET", "/admin/cas", id="mtls GET /admin/cas"),
    pytest.param("mtls", "POST", "/admin/cas/rotate", id="mtls POST rotate"),
    pytest.param("mtls", "GET", "/admin/audit", id="mtls GET /admin/audit"),
    pytest.param("mtls", "POST", "/admin/revocations", id="mtls POST /admin/revocations"),
    pytest.param("mtls", "POST", "/v1/renew", id="mtls POST /v1/renew"),
    pytest.param("mtls", "GET", "/openapi.json", id="mtls GET /openapi.json"),
    pytest.param("mtls", "GET", "/docs", id="mtls GET /docs"),
]


@pytest.mark.parametrize(("listener", "method", "path"), SPEC_ROUTES)
def test_spec_route_is_served(listener: str, method: str, path: str) -> None:
    table = route_table(build_apps()[listener])
    assert (method, path) in table, sorted(table)


def test_public_app_has_no_admin_or_renewal_route() -> None:
    table = route_table(build_apps()["public"])

    leaked = sorted((m, p) for m, p in table if p.startswith(("/admin", "/v1/renew")))
    assert not leaked, leaked


def test_mtls_app_serves_only_admin_and_renewal() -> None:
    table = route_table(build_apps()["mtls"])

    others = sorted(
        (m, p)
        for m, p in table
        if p not in DOC_ROUTES and not p.startswith("/admin/") and p != "/v1/renew"
    )
    assert not others, f"enrollment, OCSP, CRL or CA files on the mtls listener: {others}"
    for prefix in ("/v1/certificates", "/ocsp", "/crl", "/ca/", "/health", "/ready"):
        assert not any(p.startswith(prefix) for _, p in table), (prefix, sorted(table))


# --- The router's own errors ----------------------------------------------------------------------


@pytest.fixture
def clients(public_client: TestClient, admin_client: TestClient) -> dict[str, TestClient]:
    return {"public": public_client, "mtls": admin_client}


@pytest.mark.parametrize(
    ("listener", "method", "path", "status", "allow"),
    [
        pytest.param("public", "GET", "/nope", 404, None, id="public/unknown path"),
        pytest.param("public", "GET", "/admin/cas", 404, None, id="public/admin path"),
        pytest.param("public", "POST", "/v1/renew", 404, None, id="public/renew path"),
        pytest.param("public", "GET", "/ca/", 404, None, id="public/ca dir"),
        pytest.param("public", "DELETE", "/health", 405, "GET", id="public/DELETE /health"),
        pytest.param("public", "GET", "/v1/certificates", 405, "POST", id="public/GET enroll"),
        pytest.param("public", "PUT", "/ca/root.pem", 405, "GET", id="public/PUT root.pem"),
        pytest.param("public", "DELETE", "/ocsp", 405, "POST", id="public/DELETE /ocsp"),
        pytest.param("mtls", "GET", "/nope", 404, None, id="mtls/unknown path"),
        pytest.param("mtls", "POST", "/v1/certificates", 404, None, id="mtls/enroll path"),
        pytest.param("mtls", "GET", "/crl/x.crl", 404, None, id="mtls/crl path"),
        pytest.param("mtls", "POST", "/ocsp", 404, None, id="mtls/ocsp path"),
        pytest.param("mtls", "GET", "/admin/tokens", 405, "POST", id="mtls/GET tokens"),
        pytest.param("mtls", "DELETE", "/admin/certificates", 405, "GET", id="mtls/DELETE list"),
        pytest.param("mtls", "PUT", "/admin/audit", 405, "GET", id="mtls/PUT audit"),
    ],
)
def test_router_errors_are_problems(
    listener: str,
    method: str,
    path: str,
    status: int,
    allow: str | None,
    clients: dict[str, TestClient],
    problem: Callable[..., dict[str, Any]],
) -> None:
    response = clients[listener].request(method, path)

    problem(response, status, "not-found" if status == 404 else "method-not-allowed")
    if allow is not None:  # RFC 9110 §15.5.6: a 405 must say what is allowed
        assert allow in response.headers.get("allow", ""), dict(response.headers)


# --- Health and readiness -------------------------------------------------------------------------


def test_health(public_client: TestClient) -> None:
    response = public_client.get("/health")

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_ready_with_database_and_issuing_ca(public_client: TestClient) -> None:
    response = public_client.get("/ready")

    assert response.status_code == 200, response.text


def test_not_ready_without_an_issuing_ca(settings: Settings, clock: FixedClock) -> None:
    """A migrated but uninitialised database: it answers, but there is no CA to issue with."""
    services = Services(settings, clock=clock)
    try:
        with TestClient(create_public_app(services)) as client:
            response = client.get("/ready")
            health = client.get("/health")
    finally:
        services.close()

    assert response.status_code == 503, response.text
    assert health.status_code == 200, "liveness does not depend on readiness"


def test_not_ready_when_the_database_does_not_answer(
    services: Services, public_client: TestClient, tmp_path: Path
) -> None:
    """The issuing CA is loaded, then the database goes away (a path that cannot be opened)."""
    assert public_client.get("/ready").status_code == 200
    working = services.db
    services.db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'gone.db'}")
    try:
        response = public_client.get("/ready")
    finally:
        services.db.dispose()
        services.db = working

    assert response.status_code == 503, response.text
    assert public_client.get("/ready").status_code == 200, "ready again once the database answers"


# --- CA files -------------------------------------------------------------------------------------


def ski_hex(certificate: x509.Certificate) -> str:
    return certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest.hex()


def test_root_pem(
    public_client: TestClient, initialised_settings: Settings, initialised_report: InitReport
) -> None:
    response = public_client.get("/ca/root.pem")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(PEM_FILE), response.headers
    certificates = x509.load_pem_x509_certificates(response.content)
    assert len(certificates) == 1
    root = certificates[0]
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    assert ski_hex(root) == initialised_report.root_ca_id
    assert response.content == (initialised_settings.data_dir / "root.pem").read_bytes()


def test_chain_pem_is_issuing_then_root(
    public_client: TestClient, initialised_settings: Settings, initialised_report: InitReport
) -> None:
    response = public_client.get("/ca/chain.pem")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(PEM_FILE), response.headers
    issuing, root = x509.load_pem_x509_certificates(response.content)
    assert ski_hex(issuing) == initialised_report.issuing_ca_id
    assert ski_hex(root) == initialised_report.root_ca_id
    issuing.verify_directly_issued_by(root)
    assert response.content == (initialised_settings.data_dir / "ca-chain.pem").read_bytes()


@pytest.mark.parametrize("which", ["root", "issuing"])
def test_ca_certificate_as_der(
    which: str,
    public_client: TestClient,
    initialised_settings: Settings,
    initialised_report: InitReport,
) -> None:
    ca_id = initialised_report.root_ca_id if which == "root" else initialised_report.issuing_ca_id
    chain = x509.load_pem_x509_certificates(
        (initialised_settings.data_dir / "ca-chain.pem").read_bytes()
    )
    expected = chain[1] if which == "root" else chain[0]

    response = public_client.get(f"/ca/{ca_id}.crt")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(PKIX_CERT), response.headers
    assert response.content == expected.public_bytes(Encoding.DER)


def test_aia_ca_issuers_url_of_a_leaf_serves_its_issuer(
    public_client: TestClient, initialised_settings: Settings
) -> None:
    leaf, issuing = x509.load_pem_x509_certificates(
        (initialised_settings.data_dir / "admin.pem").read_bytes()
    )
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    (url,) = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]

    response = public_client.get(url)

    assert response.status_code == 200, f"{url}: {response.text}"
    assert response.content == issuing.public_bytes(Encoding.DER)


@pytest.mark.parametrize("name", ["00" * 20, "not-a-ca", "ABCDEF"])
def test_unknown_ca_certificate_is_404(
    name: str, public_client: TestClient, problem: Callable[..., dict[str, Any]]
) -> None:
    problem(public_client.get(f"/ca/{name}.crt"), 404, "not-found")


# --- OpenAPI --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "expected_path"),
    [
        pytest.param("public", "/v1/certificates", id="public"),
        pytest.param("mtls", "/admin/tokens", id="mtls"),
    ],
)
def test_openapi_document(
    listener: str, expected_path: str, public_client: TestClient, admin_client: TestClient
) -> None:
    """Served on both listeners; on the mtls one only to a certificate with a role (see
    tests/api/test_mtls_docs_csrf.py for who is refused)."""
    client = public_client if listener == "public" else admin_client
    response = client.get("/openapi.json")
    docs = client.get("/docs")

    assert response.status_code == 200, response.text
    document = response.json()
    assert document["openapi"].startswith("3."), document.get("openapi")
    assert expected_path in document["paths"], sorted(document["paths"])
    assert docs.status_code == 200, docs.text
    assert docs.headers["content-type"].startswith("text/html")


def test_openapi_documents_stay_apart(public_client: TestClient, admin_client: TestClient) -> None:
    public_paths = set(public_client.get("/openapi.json").json()["paths"])
    mtls_paths = set(admin_client.get("/openapi.json").json()["paths"])

    assert not any(p.startswith("/admin") for p in public_paths), sorted(public_paths)
    assert not any(p.startswith(("/v1/certificates", "/ocsp", "/crl")) for p in mtls_paths)


# --- Certificate status ---------------------------------------------------------------------------


def issue(services: Services, csrs: Any, *, days: int | None = None) -> str:
    created = services.tokens.create(
        actor="test",
        profiles=["server"],
        names=["*.zone"],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    issued = services.enrollment.enroll(
        token=created.token, csr_data=csrs.pem_for("a.zone"), validity_days=days
    )
    return issued.serial


STATUS_KEYS = {"serial", "status", "not_after", "revoked_at", "reason"}


def test_status_good(services: Services, public_client: TestClient, csrs: Any) -> None:
    serial = issue(services, csrs)

    response = public_client.get(f"/v1/certificates/{serial}/status")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == STATUS_KEYS, body
    assert body["serial"] == serial
    assert body["status"] == "good"
    assert body["revoked_at"] is None
    assert body["reason"] is None


@pytest.mark.parametrize("reason", ["keyCompromise", "certificateHold", "superseded"])
def test_status_revoked(
    reason: str, services: Services, public_client: TestClient, csrs: Any
) -> None:
    serial = issue(services, csrs)
    services.revocation.revoke(serial, reason=reason, invalidity_date=None, actor="test")

    body = public_client.get(f"/v1/certificates/{serial}/status").json()

    assert body["status"] == "revoked", body
    assert body["reason"] == reason, body
    assert body["revoked_at"] is not None, body


def test_status_expired_after_not_after(
    services: Services, public_client: TestClient, csrs: Any, clock: FixedClock
) -> None:
    serial = issue(services, csrs, days=1)
    assert public_client.get(f"/v1/certificates/{serial}/status").json()["status"] == "good"

    clock.advance(days=1, seconds=1)

    body = public_client.get(f"/v1/certificates/{serial}/status").json()
    assert body["status"] == "expired", body


def test_status_revoked_wins_over_expired(
    services: Services, public_client: TestClient, csrs: Any, clock: FixedClock
) -> None:
    serial = issue(services, csrs, days=1)
    services.revocation.revoke(serial, reason="keyCompromise", invalidity_date=None, actor="test")
    clock.advance(days=2)

    assert public_client.get(f"/v1/certificates/{serial}/status").json()["status"] == "revoked"


def colon_separated(serial: str) -> str:
    padded = serial if len(serial) % 2 == 0 else "0" + serial
    return ":".join(padded[i : i + 2] for i in range(0, len(padded), 2))


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(str.upper, id="uppercase"),
        pytest.param(colon_separated, id="colon separated"),
        pytest.param(lambda s: colon_separated(s).upper(), id="uppercase colon separated"),
        pytest.param(lambda s: "00" + s, id="leading zeros"),
    ],
)
def test_status_accepts_other_spellings(
    spell: Callable[[str], str], services: Services, public_client: TestClient, csrs: Any
) -> None:
    serial = issue(services, csrs)

    response = public_client.get(f"/v1/certificates/{spell(serial)}/status")

    assert response.status_code == 200, response.text
    assert response.json()["serial"] == serial, "answers use the canonical lowercase form"


def test_status_of_a_serial_never_issued_is_404(
    public_client: TestClient, problem: Callable[..., dict[str, Any]]
) -> None:
    problem(public_client.get(f"/v1/certificates/{'5a' * 19}/status"), 404, "not-found")


@pytest.mark.parametrize(
    "serial",
    [
        pytest.param("xyz", id="not hex"),
        pytest.param("0x1f", id="0x prefix"),
        pytest.param("0", id="zero"),
        pytest.param("f" * 41, id="longer than 20 octets"),
        pytest.param("12-34", id="dashes"),
    ],
)
def test_status_of_a_malformed_serial_is_400(
    serial: str, public_client: TestClient, problem: Callable[..., dict[str, Any]]
) -> None:
    problem(public_client.get(f"/v1/certificates/{serial}/status"), 400, "invalid-serial")
