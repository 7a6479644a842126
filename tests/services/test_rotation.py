"""CA rotation in the service layer: the new issuing CA is used at once by every process
sharing the database, the previous one keeps its CRL sequence and OCSP answers, a CA past its
notAfter is no longer republished, and the audit log records the rotation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from app.clock import FixedClock
from app.config import Settings
from app.errors import InvalidRequestError, NotFoundError
from app.services.container import Services
from app.services.setup import InitReport
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db


def crl_of(services: Services, ca_id: str) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(services.crls.latest(ca_id).der)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def ocsp_status(services: Services, leaf: x509.Certificate, issuer: x509.Certificate) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    answer = ocsp.load_der_ocsp_response(
        services.ocsp.respond(request.public_bytes(Encoding.DER)).der
    )
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.response_status
    return answer.certificate_status.name.lower()


@pytest.fixture
def other_process(initialised_settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """A second process on the same database (another worker or replica)."""
    built = Services(initialised_settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


def test_rotation_makes_a_new_active_issuing_ca(
    services: Services, initialised_report: InitReport
) -> None:
    old_id = initialised_report.issuing_ca_id

    new = services.authorities.rotate(actor="test")

    assert new.ca_id != old_id
    assert new.active
    assert new.kind == "issuing"
    assert new.parent_id == initialised_report.root_ca_id
    assert services.keyring.active_issuer().ca_id == new.ca_id
    by_id = {a.ca_id: a for a in services.authorities.list()}
    assert not by_id[old_id].active, "the previous CA is still marked active"
    subject = new.certificate.subject.rfc4514_string()
    assert subject.startswith("CN=MintCA Issuing CA 2"), subject
    root = services.keyring.root().certificate
    new.certificate.verify_directly_issued_by(root)
    assert isinstance(new.certificate.public_key(), ec.EllipticCurvePublicKey), "key type kept"
    assert crl_number(crl_of(services, new.ca_id)) == 1, "the new CA publishes its first CRL"


def test_enrollment_in_another_process_uses_the_new_ca_at_once(
    services: Services, other_process: Services
) -> None:
    before = enroll_via_services(other_process)  # the other process has loaded its keyring

    new = services.authorities.rotate(actor="test")
    after = enroll_via_services(other_process)

    assert before.chain[0] != new.certificate
    assert after.chain[0] == new.certificate, "the other process still enrolls with the old CA"
    after.certificate.verify_directly_issued_by(new.certificate)
    assert after.chain[-1] == services.keyring.root().certificate
    assert other_process.keyring.refresh() is False, "nothing changed, yet it reloads"
    assert services.keyring.refresh() is False, "nothing changed, yet it reloads"


def test_options_choose_the_key_type_and_validity_never_past_the_root(
    services: Services, clock: FixedClock
) -> None:
    short = services.authorities.rotate(actor="test", key_type="rsa-2048", validity=timedelta(1))
    long = services.authorities.rotate(actor="test", validity=timedelta(days=36500))

    assert isinstance(short.certificate.public_key(), rsa.RSAPublicKey)
    assert short.certificate.not_valid_after_utc - clock.now() <= timedelta(days=1)
    root_not_after = services.keyring.root().certificate.not_valid_after_utc
    assert long.certificate.not_valid_after_utc == root_not_after
    assert isinstance(long.certificate.public_key(), rsa.RSAPublicKey), "kept the previous type"


def test_the_old_ca_keeps_its_crl_sequence_and_ocsp(
    services: Services, initialised_report: InitReport
) -> None:
    old_id = initialised_report.issuing_ca_id
    old_ca = services.keyring.get(old_id).certificate
    leaf = enroll_via_services(services).certificate
    number_before = crl_number(crl_of(services, old_id))

    services.authorities.rotate(actor="test")
    good = ocsp_status(services, leaf, old_ca)
    services.revocation.revoke(
        f"{leaf.serial_number:x}", reason="keyCompromise", invalidity_date=None, actor="test"
    )
    revoked = ocsp_status(services, leaf, old_ca)

    assert (good, revoked) == ("good", "revoked")
    crl = crl_of(services, old_id)
    assert crl_number(crl) == number_before + 1, "the old CA's number sequence continues"
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl.is_signature_valid(old_ca.public_key())  # type: ignore[arg-type]  # an EC key


def test_a_ca_past_its_not_after_is_not_republished(
    services: Services, clock: FixedClock, initialised_report: InitReport
) -> None:
    short = services.authorities.rotate(actor="test", validity=timedelta(days=1))
    newest = services.authorities.rotate(actor="test")
    clock.advance(days=2)

    republished = {crl.ca_id for crl in services.crls.republish_due()}

    expected = {initialised_report.root_ca_id, initialised_report.issuing_ca_id, newest.ca_id}
    assert republished == expected, "an expired CA was republished, or a live one skipped"
    assert crl_number(crl_of(services, short.ca_id)) == 1, "its last CRL stays served as it was"


def test_rotation_is_audited(services: Services, initialised_report: InitReport) -> None:
    new = services.authorities.rotate(actor="cert:abc CN=admin")

    entry = services.audit.newest(limit=1)[0]

    assert (entry.action, entry.actor, entry.target) == (
        "ca.rotate",
        "cert:abc CN=admin",
        new.ca_id,
    )
    assert entry.details["previous"] == initialised_report.issuing_ca_id
    assert entry.details["root"] == initialised_report.root_ca_id
    assert entry.details["key_type"] == "ec-p256"


def test_an_unknown_ca_id_is_still_not_found_after_rotation(services: Services) -> None:
    services.authorities.rotate(actor="test")

    with pytest.raises(NotFoundError):
        services.keyring.get("00" * 20)


def test_concurrent_rotations_in_two_processes_both_land_in_order(
    services: Services, other_process: Services
) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def rotate(process: Services) -> None:
        try:
            results.append(process.authorities.rotate(actor="test").ca_id)
        except BaseException as exc:  # reported below, with the thread's own exception
            errors.append(exc)

    threads = [threading.Thread(target=rotate, args=(p,)) for p in (services, other_process)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    issuing = [a for a in services.authorities.list() if a.kind == "issuing"]
    names = sorted(a.certificate.subject.rfc4514_string().split(",")[0] for a in issuing)
    assert names == [f"CN=MintCA Issuing CA {n}" for n in (1, 2, 3)], names
    assert len(results) == 2, results
    # The root row's lock orders them: the second to take it is generation 3, and active.
    active = [a.certificate.subject.rfc4514_string() for a in issuing if a.active]
    assert active == ["CN=MintCA Issuing CA 3,O=MintCA"], active


def test_an_unknown_key_type_is_refused_and_changes_nothing(services: Services) -> None:
    before = [a.ca_id for a in services.authorities.list()]

    with pytest.raises(InvalidRequestError, match="choose one of"):
        services.authorities.rotate(actor="test", key_type="dsa-1024")

    assert [a.ca_id for a in services.authorities.list()] == before
