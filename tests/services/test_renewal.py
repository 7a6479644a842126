"""Renewal as a use case: the successor keeps names, profile and lifetime, comes from the active
issuing CA, is stored with a `certificate.renew` audit row naming its predecessor, and nothing
is issued for a revoked, held, expired or unknown certificate or a CSR that adds a name."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from app.ca.names import RequestedNames
from app.ca.profiles import PROFILES
from app.clock import FixedClock
from app.errors import NameNotAllowedError, PeerRejectedError
from app.services.certificates import sign_leaf, store_certificate
from app.services.container import Services
from app.services.enrollment import IssuedCertificate

pytestmark = pytest.mark.db


def csr(key: ec.EllipticCurvePrivateKey, cn: str | None = None, dns: tuple[str, ...] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def enroll(
    services: Services, profile: str, cn: str, dns: tuple[str, ...] = (), days: int = 10
) -> tuple[ec.EllipticCurvePrivateKey, IssuedCertificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    token = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[cn, *dns],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    issued = services.enrollment.enroll(
        token=token.token, csr_data=csr(key, cn, dns), validity_days=days
    )
    return key, issued


def san_of(certificate: x509.Certificate) -> list[x509.GeneralName]:
    return list(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    ("profile", "cn", "dns"),
    [
        pytest.param("server", "api.zone", ("api.zone", "alt.zone"), id="server"),
        pytest.param("peer", "mesh.zone", ("mesh.zone",), id="peer"),
        pytest.param("client", "worker-1", (), id="client with a derived URI"),
        pytest.param("auditor", "alice", (), id="auditor"),
    ],
)
@pytest.mark.parametrize("new_key", [True, False], ids=["new key", "same key"])
def test_the_successor_keeps_names_profile_and_lifetime(
    profile: str, cn: str, dns: tuple[str, ...], new_key: bool, services: Services
) -> None:
    key, old = enroll(services, profile, cn, dns)
    key = ec.generate_private_key(ec.SECP256R1()) if new_key else key

    new = services.renewal.renew(old.serial, csr_data=csr(key), actor="cert:test")

    assert new.serial != old.serial
    assert new.profile == profile
    assert new.certificate.subject == old.certificate.subject
    assert san_of(new.certificate) == san_of(old.certificate)
    assert (spki(new.certificate) == spki(old.certificate)) is not new_key
    lifetime = new.certificate.not_valid_after_utc - new.certificate.not_valid_before_utc
    assert lifetime == old.certificate.not_valid_after_utc - old.certificate.not_valid_before_utc
    assert new.certificate.issuer == services.keyring.active_issuer().certificate.subject
    assert services.certificates.get(old.serial).status(services.clock.now()) == "good"


def test_renewal_is_stored_and_audited_with_the_old_serial(services: Services) -> None:
    key, old = enroll(services, "server", "api.zone", ("api.zone",))

    new = services.renewal.renew(old.serial, csr_data=csr(key, "api.zone"), actor="cert:x")

    with services.db.read() as session:
        rows = session.execute(
            text("SELECT action, actor, details FROM audit_log WHERE target = :t"),
            {"t": new.serial},
        ).all()
        tokens = session.execute(
            text("SELECT token_id FROM certificates WHERE serial IN (:a, :b)"),
            {"a": old.serial, "b": new.serial},
        ).all()
    ((action, actor, details),) = rows
    details = json.loads(details) if isinstance(details, str) else details  # text(): raw JSON
    assert (action, actor, details["renews"]) == ("certificate.renew", "cert:x", old.serial)
    assert len({t for (t,) in tokens}) == 1, "the successor carries its predecessor's token"


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param({"cn": "other.zone"}, id="another CN"),
        pytest.param({"cn": "api.zone", "dns": ("api.zone", "extra.zone")}, id="an extra SAN"),
    ],
)
def test_a_csr_cannot_add_a_name(asked: dict[str, Any], services: Services) -> None:
    key, old = enroll(services, "server", "api.zone", ("api.zone",))
    before = count(services)

    with pytest.raises(NameNotAllowedError, match="renewal keeps"):
        services.renewal.renew(old.serial, csr_data=csr(key, **asked), actor="t")

    assert count(services) == before


def count(services: Services) -> int:
    with services.db.read() as session:
        return int(session.execute(text("SELECT count(*) FROM certificates")).scalar_one())


@pytest.mark.parametrize("state", ["keyCompromise", "certificateHold", "expired", "unknown"])
def test_nothing_is_issued_for_an_unusable_certificate(
    state: str, services: Services, clock: FixedClock
) -> None:
    key, old = enroll(services, "peer", "p.zone", days=1)
    serial = old.serial
    if state == "expired":
        clock.advance(days=2)
    elif state == "unknown":
        serial = "5a" * 19
    else:
        services.revocation.revoke(serial, reason=state, invalidity_date=None, actor="t")
    before = count(services)

    with pytest.raises(PeerRejectedError):
        services.renewal.renew(serial, csr_data=csr(key), actor="t")

    assert count(services) == before


def test_a_cn_only_caller_certificate_gains_its_uri_san(services: Services) -> None:
    """Admin and client certificates issued before caller URIs existed had a CN only."""
    key = ec.generate_private_key(ec.SECP256R1())
    authority = services.keyring.active_issuer()
    now = services.clock.now()
    legacy = sign_leaf(
        authority,
        public_key=key.public_key(),
        names=RequestedNames(common_name="ops"),
        profile=PROFILES["admin"],
        validity=timedelta(days=90),
        now=now,
        endpoints=services.endpoints,
    )
    with services.db.write() as session:
        store_certificate(
            session,
            legacy,
            ca_id=authority.ca_id,
            profile="admin",
            names=RequestedNames(common_name="ops"),
            token_id=None,
            now=now,
            actor="test",
        )
    serial = format(legacy.serial_number, "x")

    new = services.renewal.renew(serial, csr_data=csr(key, "ops"), actor="t")

    assert new.certificate.subject == legacy.subject
    assert san_of(new.certificate) == [
        x509.UniformResourceIdentifier("spiffe://mintca.internal/admin/ops")
    ]
