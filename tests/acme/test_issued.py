"""After issuance: revokeCert (by the account, by the certificate key), renewal information,
pkilint on ACME certificates, and tls-alpn-01 validation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from app.ca.acme.jws import b64url_encode, key_authorization
from app.ca.acme.renewal_info import format_cert_id
from app.ca.acme.tlsalpn import ACME_IDENTIFIER_OID
from app.clock import FixedClock
from app.services.container import Services
from tests.acme.conftest import ZONE, AcmeClient, Http01Answers, TlsAlpnAnswer
from tests.acme.dns_server import FakeDNS
from tests.acme.flow import (
    issue,
    new_order,
    problem,
    settle,
)
from tests.acme.jose import public_jwk
from tests.services.test_certificate_lint import lint


def test_revocation_by_the_ordering_account_only(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    acme_http: Any,
    credential: tuple[str, str],
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"rev.{ZONE}")
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    revoke_url = account.directory["revokeCert"]
    intruder = AcmeClient(acme_http)
    other = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    intruder.register(other.kid, other.hmac_key)
    problem(intruder.post(revoke_url, {"certificate": der}), 403, "unauthorized")
    problem(account.post(revoke_url, {"certificate": der, "reason": 6}), 400, "badRevocationReason")
    done = account.post(revoke_url, {"certificate": der, "reason": 1})
    assert done.status_code == 200, done.text
    info = acme_services.certificates.get(f"{leaf.serial_number:x}")
    assert info.revocation_reason == "keyCompromise"
    problem(account.post(revoke_url, {"certificate": der}), 400, "alreadyRevoked")


def alpn_certificate(
    name: str, key_auth: str, *, digest_of: str | None = None
) -> tuple[bytes, bytes]:
    """RFC 8737 §3: self-signed, one SAN, critical acmeIdentifier with SHA-256(key auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256((digest_of or key_auth).encode()).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return certificate.public_bytes(Encoding.PEM), key_pem


@pytest.mark.parametrize(
    ("digest_of", "status"),
    [
        pytest.param(None, "valid", id="right digest"),
        pytest.param("other", "invalid", id="wrong digest"),
    ],
)
def test_tls_alpn01(
    account: AcmeClient,
    acme_services: Services,
    tlsalpn: TlsAlpnAnswer,
    clock: FixedClock,
    digest_of: str | None,
    status: str,
) -> None:
    name = f"alpn.{ZONE}"
    _url, order = new_order(account, name)
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "tls-alpn-01")
    key_auth = key_authorization(challenge["token"], public_jwk(account.key))
    cert_pem, key_pem = alpn_certificate(name, key_auth, digest_of=digest_of)
    tlsalpn.cert_path.write_bytes(cert_pem)
    tlsalpn.key_path.write_bytes(key_pem)
    account.post(challenge["url"], {})
    settle(acme_services, clock)
    result = account.post(challenge["url"], None).json()
    assert result["status"] == status, result


def test_renewal_info_suggests_a_window_and_now_once_revoked(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"ari.{ZONE}")
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    cert_id = format_cert_id(aki.key_identifier, leaf.serial_number)
    url = f"{account.directory['renewalInfo']}/{cert_id}"
    window = account.http.get(account.path(url))
    assert window.status_code == 200, window.text
    start = datetime.fromisoformat(window.json()["suggestedWindow"]["start"])
    assert leaf.not_valid_before_utc < start < leaf.not_valid_after_utc, window.text
    assert window.headers["Retry-After"]
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    account.post(account.directory["revokeCert"], {"certificate": der})
    revoked = account.http.get(account.path(url)).json()["suggestedWindow"]
    assert datetime.fromisoformat(revoked["end"]) < datetime.now(UTC), revoked
    unknown = account.http.get(account.path(f"{account.directory['renewalInfo']}/AAAA.AQ"))
    problem(unknown, 404, "malformed")
    problem(
        account.http.get(account.path(f"{account.directory['renewalInfo']}/x")), 400, "malformed"
    )


def test_pkilint_finds_nothing_in_an_acme_certificate(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    tmp_path: Path,
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"lint.{ZONE}")
    status, set_aside, findings = lint(leaf, tmp_path / "acme.pem")
    assert findings == "", findings
    assert status == set_aside, f"pkilint exited {status}: {findings}"


def test_revocation_signed_by_the_certificate_key(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(account, acme_services, http01, test_dns, f"own.{ZONE}", key=leaf_key)
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    url = account.directory["revokeCert"]
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    problem(
        account.post(url, {"certificate": der}, key=stranger_key, use_jwk=True), 403, "unauthorized"
    )
    done = account.post(url, {"certificate": der, "reason": 4}, key=leaf_key, use_jwk=True)
    assert done.status_code == 200, done.text
    info = acme_services.certificates.get(f"{leaf.serial_number:x}")
    assert info.revocation_reason == "superseded"
    revoked = next(
        e for e in acme_services.audit.newest(limit=5) if e.action == "certificate.revoke"
    )
    assert revoked.actor == f"acme:certificate-key:{info.serial}"
