"""Roles on the mtls listener: every route declares one (checked over the app's own route list,
so a route someone adds without a role fails here), the declared role is SPEC's, each role is
refused where it is not enough, and admins issue role certificates (an audited action)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.apps import create_mtls_app
from app.api.deps import declared_role, require_declared_role
from app.server.tls_scope import TLSScopeApp
from app.services.container import Services
from app.services.peers import Role

pytestmark = pytest.mark.db

Problem = Callable[..., dict[str, Any]]

# SPEC's roles paragraph as a table. A route added to the mtls app must be added here with
# the role it needs (`Depends(require_...)` or an *Dep parameter in the route), or this fails.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("POST", "/v1/renew"): Role.CERTIFICATE,
    ("GET", "/openapi.json"): Role.AUDITOR,
    ("GET", "/docs"): Role.AUDITOR,
    ("GET", "/docs/init.js"): Role.AUDITOR,
    ("GET", "/docs/{asset}"): Role.AUDITOR,
    ("GET", "/admin/certificates"): Role.AUDITOR,
    ("GET", "/admin/certificates/{serial}"): Role.AUDITOR,
    ("GET", "/admin/cas"): Role.AUDITOR,
    ("GET", "/admin/audit"): Role.AUDITOR,
    ("GET", "/admin/audit/chain"): Role.AUDITOR,
    ("POST", "/admin/tokens"): Role.OPERATOR,
    ("POST", "/admin/certificates/{serial}/revoke"): Role.OPERATOR,
    ("POST", "/admin/certificates/{serial}/unhold"): Role.OPERATOR,
    ("POST", "/admin/revocations"): Role.OPERATOR,  # bulk revocation (crl)
    ("POST", "/admin/cas/rotate"): Role.ADMIN,  # rotation
    ("POST", "/admin/acme/eab"): Role.ADMIN,  # ACME credentials
    ("POST", "/admin/role-certificates"): Role.ADMIN,
}


def mtls_routes() -> list[tuple[str, str, Any]]:
    """(method, path, route) for every route of the mtls app, routers included."""
    app = create_mtls_app(object())  # type: ignore[arg-type]  # routes only
    return [
        (method, route.path, route)
        for route in iter_route_contexts(app.routes)
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD"
    ]


def test_every_mtls_route_declares_the_role_spec_gives_it() -> None:
    routes = mtls_routes()
    assert len(routes) >= 10, routes

    undeclared = [(m, p) for m, p, r in routes if declared_role(r) is None]
    unlisted = [(m, p) for m, p, _ in routes if (m, p) not in ROUTE_ROLES]
    wrong = {
        (m, p): (declared_role(r), ROUTE_ROLES[(m, p)])
        for m, p, r in routes
        if (m, p) in ROUTE_ROLES and declared_role(r) != ROUTE_ROLES[(m, p)]
    }

    assert not undeclared, f"routes that declare no role (they default to admin): {undeclared}"
    assert not unlisted, f"add these to ROUTE_ROLES with SPEC's role: {unlisted}"
    assert not wrong, f"(declared, expected): {wrong}"


def test_a_route_that_declares_no_role_needs_admin(
    services: Services, csrs: Any, mtls_client_for: Callable[[str], TestClient], problem: Problem
) -> None:
    """The default when a route forgets to ask is the strictest role."""
    app = create_mtls_app(services)
    forgetful = APIRouter(dependencies=[Depends(require_declared_role)])

    @forgetful.get("/admin/forgetful")
    def route() -> dict[str, str]:
        return {"ok": "yes"}

    app.include_router(forgetful)
    auditor = pem_of(issue(services, csrs, "auditor", "alice"))
    operator = pem_of(issue(services, csrs, "operator", "bob"))
    admin = pem_of(issue(services, csrs, "admin", "carol"))

    def get(pem: str) -> Any:
        with TestClient(TLSScopeApp(app, {"client_cert_chain": [pem]})) as client:
            return client.get("/admin/forgetful")

    problem(get(auditor), 403, "forbidden")
    problem(get(operator), 403, "forbidden")
    assert get(admin).status_code == 200


def issue(services: Services, csrs: Any, profile: str, name: str) -> x509.Certificate:
    created = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    csr = csrs.pem(csrs.build(cn=name))
    return services.enrollment.enroll(
        token=created.token, csr_data=csr, profile=profile
    ).certificate


def pem_of(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode()


# --- Tokens: an operator cannot mint roles --------------------------------------------------------


@pytest.mark.parametrize("profile", ["admin", "operator", "auditor", ["peer", "admin"]])
def test_an_operator_cannot_make_tokens_for_role_profiles(
    profile: Any,
    services: Services,
    csrs: Any,
    mtls_client_for: Callable[[str], TestClient],
    problem: Problem,
) -> None:
    operator = mtls_client_for(pem_of(issue(services, csrs, "operator", "bob")))

    response = operator.post("/admin/tokens", json={"names": ["x"], "profile": profile})

    problem(response, 403, "forbidden")
    assert operator.post("/admin/tokens", json={"names": ["x.zone"]}).status_code == 201


def test_an_admin_makes_tokens_for_role_profiles(admin_client: TestClient) -> None:
    response = admin_client.post("/admin/tokens", json={"names": ["x"], "profile": "auditor"})

    assert response.status_code == 201, response.text


# --- Role certificates ---------------------------------------------------------------------------


def audit_rows(services: Services, target: str) -> list[tuple[str, str]]:
    with services.db.read() as session:
        return [
            (row.action, row.actor)
            for row in session.execute(
                text("SELECT action, actor FROM audit_log WHERE target = :t ORDER BY id"),
                {"t": target},
            )
        ]


@pytest.mark.parametrize("role", ["auditor", "operator", "admin"])
def test_an_admin_issues_a_role_certificate(
    role: str, admin_client: TestClient, admin_pem: str, services: Services, csrs: Any
) -> None:
    response = admin_client.post(
        "/admin/role-certificates", json={"csr": csrs.pem(csrs.build(cn="alice")), "role": role}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["profile"] == role, body
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(f"spiffe://mintca.internal/{role}/alice")]
    admin = x509.load_pem_x509_certificate(admin_pem.encode())
    actor = f"cert:{format(admin.serial_number, 'x')} {admin.subject.rfc4514_string()}"
    assert audit_rows(services, body["serial"]) == [
        ("certificate.issue", actor),
        ("role.grant", actor),
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"role": "client"}, 400, id="not a role"),
        pytest.param({"role": "auditor", "san": True}, 400, id="a SAN in the CSR"),
        pytest.param({"role": "auditor", "validity_days": 398}, 400, id="too long"),
        pytest.param({"role": "auditor", "validity_days": 0}, 400, id="zero days"),
        pytest.param({"role": "auditor", "csr": "garbage"}, 400, id="not a CSR"),
    ],
)
def test_bad_role_certificate_requests_are_refused(
    body: dict[str, Any],
    status: int,
    admin_client: TestClient,
    services: Services,
    csrs: Any,
    problem: Problem,
) -> None:
    dns = ["alice.zone"] if body.pop("san", False) else []
    body.setdefault("csr", csrs.pem(csrs.build(cn="alice", dns=dns)))
    with services.db.read() as session:
        before = session.execute(text("SELECT count(*) FROM certificates")).scalar_one()

    problem(admin_client.post("/admin/role-certificates", json=body), status)

    with services.db.read() as session:
        assert session.execute(text("SELECT count(*) FROM certificates")).scalar_one() == before


@pytest.mark.parametrize("profile", ["auditor", "operator"])
def test_only_an_admin_issues_role_certificates(
    profile: str,
    services: Services,
    csrs: Any,
    mtls_client_for: Callable[[str], TestClient],
    problem: Problem,
) -> None:
    client = mtls_client_for(pem_of(issue(services, csrs, profile, "bob")))

    response = client.post(
        "/admin/role-certificates", json={"csr": csrs.pem(csrs.build(cn="eve")), "role": "admin"}
    )

    problem(response, 403, "forbidden")
