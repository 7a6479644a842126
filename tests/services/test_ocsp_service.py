"""The OCSP service (RFC 6960, RFC 5019 profile): delegated responders issued, renewed and shared
through the database; CA-signed answers on request; cached nonce-less answers; one CA per
request. Requests are made with cryptography's OCSPRequestBuilder, answers parsed with
cryptography."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import text

from app.ca.keys import unwrap_private_key
from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.enrollment import IssuedCertificate
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db

RESPONDER_VALIDITY = timedelta(days=7)


# --- helpers -------------------------------------------------------------------------------------


def ocsp_request(
    certificate: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None
) -> bytes:
    # SHA-1 CertIDs: what RFC 5019 clients (and `openssl ocsp`) send.
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def combine(*requests: bytes) -> bytes:
    """One OCSPRequest with the CertIDs of several (cryptography builds one CertID per request)."""
    singles = [
        asn1_ocsp.Request.load(single.dump())
        for der in requests
        for single in asn1_ocsp.OCSPRequest.load(der)["tbs_request"]["request_list"]
    ]
    der: bytes = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": singles}}).dump()
    return der


def answer(services: Services, request_der: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(services.ocsp.respond(request_der).der)


def successful(services: Services, request_der: bytes) -> ocsp.OCSPResponse:
    response = answer(services, request_der)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, response.response_status
    return response


def check_signed_by(response: ocsp.OCSPResponse, public_key: object, who: str) -> None:
    signature, tbs = response.signature, response.tbs_response_bytes
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            algorithm = response.signature_hash_algorithm
            assert algorithm is not None
            public_key.verify(signature, tbs, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            algorithm = response.signature_hash_algorithm
            assert algorithm is not None
            public_key.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, tbs)
        else:
            pytest.fail(f"unexpected key type {type(public_key).__name__}")
    except InvalidSignature:
        pytest.fail(f"the OCSP response's signature does not verify with the key of {who}")


def key_hash(certificate: x509.Certificate) -> bytes:
    """RFC 6960 §4.2.1 KeyHash: SHA-1 of the subjectPublicKey value (= RFC 5280 SKI method 1)."""
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def responder_of(response: ocsp.OCSPResponse) -> x509.Certificate:
    assert len(response.certificates) == 1, (
        f"a delegated answer carries its responder certificate, got {len(response.certificates)}"
    )
    return response.certificates[0]


def responder_rows(services: Services, ca_id: str) -> list[dict[str, Any]]:
    with services.db.read() as session:
        rows = session.execute(
            text("SELECT * FROM ocsp_responders WHERE ca_id = :ca_id ORDER BY id"),
            {"ca_id": ca_id},
        ).all()
    return [dict(row._mapping) for row in rows]


@pytest.fixture
def leaf(services: Services) -> IssuedCertificate:
    return enroll_via_services(services)


@pytest.fixture
def issuing_ca(services: Services) -> x509.Certificate:
    return services.keyring.active_issuer().certificate


@pytest.fixture
def root_ca(services: Services) -> x509.Certificate:
    return services.keyring.root().certificate


@pytest.fixture
def replica(initialised_settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """A second process on the same database: its own Services, engine and caches."""
    built = Services(initialised_settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


# --- delegated responders ------------------------------------------------------------------------


def test_delegated_responder_signs_by_default(
    services: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
) -> None:
    response = successful(services, ocsp_request(leaf.certificate, issuing_ca))

    responder = responder_of(response)
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck), "id-pkix-ocsp-nocheck"
    responder.verify_directly_issued_by(issuing_ca)
    assert responder.not_valid_after_utc - clock.now() == RESPONDER_VALIDITY
    check_signed_by(response, responder.public_key(), "the responder certificate")
    assert response.responder_key_hash == key_hash(responder)
    assert response.serial_number == leaf.certificate.serial_number
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.produced_at_utc == clock.now()


def test_responder_is_renewed_near_expiry_and_shared_through_the_database(
    services: Services,
    replica: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
) -> None:
    ca_id = services.keyring.active_issuer().ca_id
    request = ocsp_request(leaf.certificate, issuing_ca)
    first = responder_of(successful(services, request))
    assert responder_of(successful(replica, request)).serial_number == first.serial_number, (
        "the replica must load the responder the first process stored, not issue its own"
    )
    assert len(responder_rows(services, ca_id)) == 1

    clock.advance(days=5, hours=12)  # 1.5 days left: less than the 2 days that trigger renewal
    response = successful(services, request)
    renewed = responder_of(response)

    assert renewed.serial_number != first.serial_number, "the responder was not renewed"
    assert renewed.not_valid_after_utc - clock.now() == RESPONDER_VALIDITY
    check_signed_by(response, renewed.public_key(), "the renewed responder certificate")
    rows = responder_rows(services, ca_id)
    assert [row["serial"] for row in rows] == [
        f"{first.serial_number:x}",
        f"{renewed.serial_number:x}",
    ], "the ocsp_responders table should hold the first and the renewed responder"
    stored = rows[-1]
    assert stored["cert_der"] == renewed.public_bytes(Encoding.DER)
    key = unwrap_private_key(
        bytes(stored["key_wrapped"]),  # bytes, or a memoryview from psycopg
        kek=services.keyring.kek,
        label=f"ocsp:{stored['serial']}",
    )
    assert key.public_key() == renewed.public_key(), "the wrapped key is not the responder's"
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secrets = {
        "PEM label": b"PRIVATE KEY",
        "PKCS#8 DER": key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()),
        "SEC1 DER": key.private_bytes(
            Encoding.DER, PrivateFormat.TraditionalOpenSSL, NoEncryption()
        ),
        "private scalar": key.private_numbers().private_value.to_bytes(32, "big"),
    }
    for column, value in stored.items():
        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        for what, secret in secrets.items():
            assert secret not in raw, f"ocsp_responders.{column} holds the key in clear ({what})"

    replica_response = successful(replica, ocsp_request(leaf.certificate, issuing_ca, nonce=b"r"))
    assert responder_of(replica_response).serial_number == renewed.serial_number, (
        "the replica should reload the renewed responder under the CA lock, not issue another"
    )
    assert len(responder_rows(services, ca_id)) == 2, "the replica issued a responder of its own"


def test_ca_signer_signs_with_the_issuing_ca(
    initialised_settings: Settings, clock: FixedClock
) -> None:
    settings = initialised_settings.model_copy(update={"ocsp_signer": "ca"})
    ca_signed = Services(settings, clock=clock)
    try:
        leaf = enroll_via_services(ca_signed)
        authority = ca_signed.keyring.active_issuer()
        response = successful(ca_signed, ocsp_request(leaf.certificate, authority.certificate))
        rows = responder_rows(ca_signed, authority.ca_id)
    finally:
        ca_signed.close()

    assert response.certificates == [], "a CA-signed answer needs no certificates"
    check_signed_by(response, authority.certificate.public_key(), "the issuing CA")
    assert response.responder_key_hash == key_hash(authority.certificate)
    assert response.responder_name is None
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert rows == [], "no delegated responder should be issued with ocsp_signer=ca"


# --- the cache -----------------------------------------------------------------------------------


def test_nonce_less_answers_are_cached_until_the_status_changes(
    services: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
) -> None:
    request = ocsp_request(leaf.certificate, issuing_ca)
    first = services.ocsp.respond(request)
    assert first.cacheable
    assert services.ocsp.respond(request).der == first.der, "identical requests, new signature"

    clock.advance(seconds=5)
    services.revocation.revoke(
        leaf.serial, reason="keyCompromise", invalidity_date=None, actor="test"
    )
    after = services.ocsp.respond(request)

    assert after.der != first.der, "the cached 'good' answer was served after the revocation"
    response = ocsp.load_der_ocsp_response(after.der)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    assert response.revocation_time_utc == clock.now()
    assert services.ocsp.respond(request).der == after.der, "the revoked answer is cached too"


def test_requests_with_a_nonce_are_never_served_from_cache(
    services: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
) -> None:
    cached = services.ocsp.respond(ocsp_request(leaf.certificate, issuing_ca))
    clock.advance(minutes=1)
    nonces = [os.urandom(16), os.urandom(16)]
    answers = []
    for nonce in [*nonces, nonces[0]]:  # a repeated nonce is signed afresh too
        request = ocsp_request(leaf.certificate, issuing_ca, nonce=nonce)
        result = services.ocsp.respond(request)
        response = ocsp.load_der_ocsp_response(result.der)
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        assert echoed == nonce, "RFC 6960 §4.4.1: the nonce must be echoed"
        assert response.produced_at_utc == clock.now(), "a nonce answer must be signed now"
        assert not result.cacheable
        answers.append(result.der)

    assert cached.der not in answers, "a nonce request got the cached nonce-less answer"
    assert len(set(answers)) == len(answers), "a nonce request was answered from a cache"


@pytest.mark.parametrize(
    ("hours", "cached"),
    [
        pytest.param(5, True, id="5h of 12h: cached"),
        pytest.param(7, False, id="7h of 12h: refreshed"),
    ],
)
def test_cached_answer_is_refreshed_after_half_the_validity(
    services: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    hours: int,
    cached: bool,
) -> None:
    assert services.settings.ocsp_validity == timedelta(hours=12), "the default"
    request = ocsp_request(leaf.certificate, issuing_ca)
    first = services.ocsp.respond(request)
    signed_at = clock.now()

    clock.advance(hours=hours)
    later = ocsp.load_der_ocsp_response(services.ocsp.respond(request).der)

    expected = signed_at if cached else clock.now()
    assert later.produced_at_utc == expected, (
        f"after {hours}h the answer should be {'the cached' if cached else 'a new'} one"
    )
    assert later.this_update_utc == expected
    assert later.next_update_utc == expected + timedelta(hours=12)
    assert (services.ocsp.respond(request).der == first.der) is cached


# --- one CA per request --------------------------------------------------------------------------

RequestFactory = Callable[
    [IssuedCertificate, IssuedCertificate, x509.Certificate, x509.Certificate], bytes
]


@pytest.mark.parametrize(
    ("make_request", "expected"),
    [
        pytest.param(
            lambda leaf, other, issuing, root: combine(
                ocsp_request(leaf.certificate, issuing), ocsp_request(issuing, root)
            ),
            None,
            id="unauthorized/leaf and issuing CA: two CAs in one request",
        ),
        pytest.param(
            lambda leaf, other, issuing, root: ocsp_request(issuing, root),
            [ocsp.OCSPCertStatus.GOOD],
            id="good/issuing CA asked of the root",
        ),
        pytest.param(
            lambda leaf, other, issuing, root: combine(
                ocsp_request(leaf.certificate, issuing), ocsp_request(other.certificate, issuing)
            ),
            [ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.GOOD],
            id="good/two leaves of the issuing CA",
        ),
    ],
)
def test_a_response_answers_for_one_ca(
    services: Services,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    root_ca: x509.Certificate,
    make_request: RequestFactory,
    expected: list[ocsp.OCSPCertStatus] | None,
) -> None:
    other = enroll_via_services(services)
    response = answer(services, make_request(leaf, other, issuing_ca, root_ca))

    if expected is None:
        assert response.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED, (
            f"one response has one signer, so CertIDs of two CAs are refused; got "
            f"{response.response_status}"
        )
        return
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, response.response_status
    assert [single.certificate_status for single in response.responses] == expected
    signer_ca = root_ca if expected == [ocsp.OCSPCertStatus.GOOD] else issuing_ca
    responder = responder_of(response)
    responder.verify_directly_issued_by(signer_ca)
    check_signed_by(response, responder.public_key(), "the responder of the asked CA")
