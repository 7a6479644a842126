"""Small builders the test layers share: CSRs and enrollments through the service layer, and
the check that an external tool is installed."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.services.container import Services
from app.services.enrollment import IssuedCertificate


def make_csr(
    name: str, key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A P-256 key (or `key`) and a CSR with `name` as CN and as its one DNS SAN."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr


def csr_pem(name: str) -> str:
    return make_csr(name)[1].public_bytes(Encoding.PEM).decode()


def enroll_via_services(
    services: Services, name: str | None = None, *, validity_days: int | None = None
) -> IssuedCertificate:
    """A server certificate from the active issuing CA, through a one-use token and a CSR."""
    name = name or f"{uuid.uuid4().hex[:12]}.svc.example.internal"
    token = services.tokens.create(
        actor="test",
        profiles=["server"],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    return services.enrollment.enroll(
        token=token.token, csr_data=csr_pem(name), validity_days=validity_days
    )


def foreign_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A throwaway self-signed CA that MintCA has never seen (valid for a day)."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def require_tools(*tools: str, package: str) -> None:
    """Skip the calling test when a command-line tool is missing, except in CI (`CI=true`),
    where `.ci/run` installs every tool the suite uses: there a missing tool fails the test,
    so an interop check never stops running unnoticed."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (Debian {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must install it (.ci/run)", pytrace=False)
    pytest.skip(message)
