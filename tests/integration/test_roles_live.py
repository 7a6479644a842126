"""Each role against each route of the mtls listener, over real TLS: allowed where SPEC's roles
paragraph allows it, 403 elsewhere. Role certificates come from `mintca admin issue`.

MATRIX lists every route with the least role that may use it and a request that is valid for
it. Routes that are not on this branch's app yet (built by others) are skipped until they are;
a route on the app but missing from MATRIX fails the test, so new routes get a row."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.api.apps import create_mtls_app
from app.services.peers import Role
from tests.api.test_routes import route_table
from tests.integration.live import LiveServer
from tests.integration.test_mtls import enroll_client

pytestmark = pytest.mark.integration

Body = Callable[["Fixture"], Any]


@dataclass(frozen=True)
class Fixture:
    victim: str  # serial of a peer certificate that operators hold and release


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route's path template, as the app lists it
    path: str  # the concrete path requested ({serial} filled in from the fixture)
    role: Role  # the least role allowed
    body: Body | None = None


def csr_for(name: str | None) -> str:
    """A CSR naming `name` by CN, or naming nothing (what renewal takes from anyone)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return csr.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


MATRIX = [
    Case("GET", "/openapi.json", "/openapi.json", Role.AUDITOR),
    Case("GET", "/docs", "/docs", Role.AUDITOR),
    Case("GET", "/docs/init.js", "/docs/init.js", Role.AUDITOR),
    Case("GET", "/docs/{asset}", "/docs/swagger-ui.css", Role.AUDITOR),
    Case("GET", "/admin/certificates", "/admin/certificates", Role.AUDITOR),
    Case("GET", "/admin/certificates/{serial}", "/admin/certificates/{serial}", Role.AUDITOR),
    Case("GET", "/admin/cas", "/admin/cas", Role.AUDITOR),
    Case("GET", "/admin/audit", "/admin/audit", Role.AUDITOR),
    Case("GET", "/admin/audit/chain", "/admin/audit/chain", Role.AUDITOR),
    Case(
        "POST",
        "/admin/tokens",
        "/admin/tokens",
        Role.OPERATOR,
        lambda f: {"names": ["*.roles.internal"], "profile": "server"},
    ),
    Case(
        "POST",
        "/admin/certificates/{serial}/revoke",
        "/admin/certificates/{serial}/revoke",
        Role.OPERATOR,
        lambda f: {"reason": "certificateHold"},
    ),
    Case(
        "POST",
        "/admin/certificates/{serial}/unhold",
        "/admin/certificates/{serial}/unhold",
        Role.OPERATOR,
        lambda f: {},
    ),
    Case(
        "POST",
        "/admin/revocations",
        "/admin/revocations",
        Role.OPERATOR,
        lambda f: {"filter": {"q": "nothing.invalid"}, "reason": "superseded", "dry_run": True},
    ),
    Case("POST", "/admin/cas/rotate", "/admin/cas/rotate", Role.ADMIN, lambda f: {}),
    Case(
        "POST",
        "/admin/acme/eab",
        "/admin/acme/eab",
        Role.ADMIN,
        lambda f: {"names": ["*.acme.internal"]},
    ),
    Case(
        "POST",
        "/admin/role-certificates",
        "/admin/role-certificates",
        Role.ADMIN,
        lambda f: {"csr": csr_for("dave"), "role": "auditor"},
    ),
    Case(
        "POST",
        "/v1/renew",
        "/v1/renew",
        Role.CERTIFICATE,
        lambda f: {"csr": csr_for(None)},
    ),
]
ROLE_OF = {
    "client": Role.CERTIFICATE,
    "auditor": Role.AUDITOR,
    "operator": Role.OPERATOR,
    "admin": Role.ADMIN,
}


def mintca(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--url", server.mtls_url],
        env={**os.environ, "MINTCA_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def admin_issue(server: LiveServer, role: str, name: str, out: Path) -> tuple[Path, Path]:
    """`mintca admin issue` with the data dir's admin bundle; checks what it printed and wrote."""
    result = mintca(server, "admin", "issue", "--role", role, "--name", name, "--out", str(out))
    assert result.returncode == 0, result
    assert f"role       {role}" in result.stdout, result.stdout
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert (out / "chain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    return out / "cert.pem", out / "key.pem"


@pytest.mark.slow
def test_admin_issue_needs_an_admin(live_server: LiveServer, tmp_path: Path) -> None:
    cert, key = admin_issue(live_server, "operator", "bob", tmp_path / "bob")

    result = mintca(
        live_server,
        "admin",
        "issue",
        "--role",
        "admin",
        "--name",
        "eve",
        "--out",
        str(tmp_path / "eve"),
        "--cert",
        str(cert),
        "--key",
        str(key),
    )

    assert result.returncode == 1, result
    assert "HTTP 403" in result.stderr, result.stderr
    assert not (tmp_path / "eve" / "key.pem").exists()


@pytest.mark.slow
def test_each_role_against_each_route(live_server: LiveServer, tmp_path: Path) -> None:
    served = route_table(create_mtls_app(object()))  # type: ignore[arg-type]  # routes only
    listed = {(c.method, c.route) for c in MATRIX}
    assert served <= listed, f"add a MATRIX row for: {sorted(served - listed)}"
    victim = enroll_client(live_server, tmp_path / "victim", profile="peer", name="v.internal")
    fixture = Fixture(victim=victim.serial)
    bundles = {
        "client": enroll_client(live_server, tmp_path / "client", profile="client", name="w1"),
        "auditor": admin_issue(live_server, "auditor", "alice", tmp_path / "alice"),
        "operator": admin_issue(live_server, "operator", "bob", tmp_path / "bob"),
        "admin": (live_server.data_dir / "admin.pem", live_server.data_dir / "admin-key.pem"),
    }
    outcomes: list[str] = []
    mismatches: list[str] = []
    for who, bundle in bundles.items():
        cert, key = (bundle.cert, bundle.key) if hasattr(bundle, "cert") else bundle
        with live_server.mtls_client(cert, key) as client:
            for case in MATRIX:
                if (case.method, case.route) not in served:
                    continue  # not on this branch yet
                kwargs: dict[str, Any] = {}
                if case.body is not None:
                    kwargs["json"] = case.body(fixture)
                path = case.path.format(serial=fixture.victim)
                response = client.request(case.method, path, **kwargs)
                allowed = ROLE_OF[who] >= case.role
                ok = response.status_code < 400 if allowed else response.status_code == 403
                line = f"{who:<9} {case.method:<5} {path:<60} {response.status_code}"
                outcomes.append(line)
                if not ok:
                    mismatches.append(
                        f"{line} expected {'2xx' if allowed else 403}: {response.text[:300]}"
                    )
    assert not mismatches, "\n".join(mismatches)
    assert len(outcomes) >= 4 * 12, "\n".join(outcomes)
