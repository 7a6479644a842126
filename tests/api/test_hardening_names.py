"""Hostile names through `POST /v1/certificates` and `POST /admin/tokens` (issue 12, items 3,
5 and 11): a newline inside a name, a CN over 64 characters, 300 SANs, and 63 KB of PEM BEGIN
lines are refused with a 4xx problem before anything is signed; nothing is stored and the
token keeps its use."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.services.container import Services

pytestmark = pytest.mark.db


def _csr_pem(cn: str | None, dns: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = []
    if cn is not None:
        with warnings.catch_warnings():  # cryptography warns about a CN over 64 characters
            warnings.simplefilter("ignore", UserWarning)
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if dns:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns])
        builder = builder.add_extension(sans, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


def _rows(services: Services) -> dict[str, int]:
    with services.db.read() as session:
        return {
            table: int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("certificates", "audit_log")
        }


@pytest.mark.parametrize(
    ("cn", "dns", "statuses"),
    [
        pytest.param(None, ["x\n.internal"], {400, 403}, id="newline inside a dns san"),
        pytest.param("x\n.internal", [], {400, 403}, id="newline inside the cn"),
        pytest.param("x.internal", ["y.internal\n"], {400, 403}, id="trailing newline in a san"),
        pytest.param("a" * 56 + ".internal", [], {400}, id="cn of 65 characters"),
        pytest.param("é" * 40, [], {400}, id="cn of 80 bytes in 40 letters"),
        pytest.param(None, [f"h{n}.internal" for n in range(300)], {400}, id="300 sans"),
    ],
)
def test_refused_before_signing(
    cn: str | None,
    dns: list[str],
    statuses: set[int],
    services: Services,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    token = new_token(["*.internal"], profile="server")
    headers = {"Authorization": f"Bearer {token['token']}"}
    before = _rows(services)

    response = public_client.post(
        "/v1/certificates", json={"csr": _csr_pem(cn, dns)}, headers=headers
    )

    assert response.status_code in statuses, response.text
    problem(response, response.status_code)
    assert _rows(services) == before, "a refused request stored a certificate or audit row"
    good = public_client.post(
        "/v1/certificates", json={"csr": _csr_pem("ok.internal", [])}, headers=headers
    )
    assert good.status_code == 201, f"the refusal spent the token's only use: {good.text}"


def test_63_kb_of_begin_lines_is_refused(
    services: Services,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    # Was 0.6 s of regex backtracking per request (and repeatable: the token is not spent).
    token = new_token(["*.internal"], profile="server")
    body = b"-----BEGIN CERTIFICATE REQUEST-----\n" * (63 * 1024 // 36)
    response = public_client.post(
        "/v1/certificates",
        content=body,
        headers={"Authorization": f"Bearer {token['token']}", "Content-Type": "application/pkcs10"},
    )
    problem(response, 400, "malformed-csr")


@pytest.mark.parametrize(
    ("pattern", "slug"),
    [
        pytest.param("*.internal\n", "profile-violation", id="suffix with trailing newline"),
        pytest.param("*.x\n.internal", "profile-violation", id="suffix with newline inside"),
        pytest.param("x\n.internal", "profile-violation", id="exact name with newline"),
        # NUL is refused at the edge, in every body field, before the name policy sees it.
        pytest.param("spiffe://td/a\x00b", "invalid-request", id="uri with nul"),
        pytest.param("a\x7f@example.org", "profile-violation", id="email with del"),
    ],
)
def test_token_patterns_with_control_characters_are_refused(
    pattern: str,
    slug: str,
    admin_client: TestClient,
    problem: Callable[..., dict[str, Any]],
) -> None:
    response = admin_client.post("/admin/tokens", json={"names": [pattern]})
    problem(response, 400, slug)


def test_largest_accepted_names_are_stored(
    services: Services,
    public_client: TestClient,
    new_token: Callable[..., dict[str, Any]],
) -> None:
    """100 names of 150 characters (15,000 in all) are issued and stored: names_text is TEXT
    (migration 0002), where VARCHAR(8192) made PostgreSQL fail after signing."""
    label = "l" * 49
    names = [f"{n:03d}{label}.{label}.{label}.internal"[:141] + ".internal" for n in range(100)]
    assert all(len(n) == 150 for n in names)
    token = new_token(["*.internal"], profile="server")
    response = public_client.post(
        "/v1/certificates",
        json={"csr": _csr_pem(None, names)},
        headers={"Authorization": f"Bearer {token['token']}"},
    )
    assert response.status_code == 201, response.text
    serial = response.json()["serial"]
    assert services.certificates.get(serial).names == names
