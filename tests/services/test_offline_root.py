"""An offline root (`mintca init --offline-root`): its key goes to a 0600 file and never to the
database; nothing online signs with it; rotation and the root's CRL take the key from the
operator; the root's long-lived CRL and OCSP `unauthorized` for root CertIDs."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import text

from app.ca.keys import PrivateKey, load_private_key_pem
from app.clock import FixedClock
from app.config import Settings
from app.errors import InvalidRequestError, OfflineKeyError
from app.services.authorities import ROOT_CRL_VALIDITY
from app.services.container import Services
from app.services.setup import InitOptions, InitReport, initialise

pytestmark = pytest.mark.db


@pytest.fixture
def offline_report(settings: Settings, clock: FixedClock) -> InitReport:
    return initialise(settings, InitOptions(offline_root=True), clock)


@pytest.fixture
def offline(
    settings: Settings, clock: FixedClock, offline_report: InitReport
) -> Iterator[Services]:
    built = Services(settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def root_key(settings: Settings, offline_report: InitReport) -> PrivateKey:
    return load_private_key_pem((settings.data_dir / "root-key.pem").read_bytes())


def root_crl(services: Services) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(services.crls.latest(services.keyring.root().ca_id).der)


def test_init_writes_the_root_key_to_a_private_file_and_not_to_the_database(
    settings: Settings, offline: Services, offline_report: InitReport, root_key: PrivateKey
) -> None:
    path = settings.data_dir / "root-key.pem"

    with offline.db.read() as session:
        stored = session.execute(text("SELECT id, key_wrapped FROM cas WHERE kind = 'root'")).one()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "root-key.pem" in offline_report.files
    assert stored == (offline_report.root_ca_id, None), "the root key reached the database"
    root = offline.keyring.root()
    assert root.offline
    assert root_key.public_key() == root.certificate.public_key()


def test_init_signs_a_long_lived_root_crl_and_republication_leaves_it(
    offline: Services, clock: FixedClock
) -> None:
    crl = root_crl(offline)
    clock.advance(days=30)

    republished = {c.ca_id for c in offline.crls.republish_due()}

    assert crl.next_update_utc - crl.last_update_utc == ROOT_CRL_VALIDITY
    assert offline.keyring.root().ca_id not in republished
    assert offline.keyring.active_issuer().ca_id in republished, "the issuing CA is online"


def test_the_issuing_ca_names_no_ocsp_responder_and_root_cert_ids_are_unauthorized(
    offline: Services,
) -> None:
    issuing = offline.keyring.active_issuer().certificate
    root = offline.keyring.root().certificate
    access = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    request = ocsp.OCSPRequestBuilder().add_certificate(issuing, root, hashes.SHA1()).build()

    answer = ocsp.load_der_ocsp_response(
        offline.ocsp.respond(request.public_bytes(Encoding.DER)).der
    )

    methods = [d.access_method for d in access]
    assert methods == [AuthorityInformationAccessOID.CA_ISSUERS], methods
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_rotation_without_the_root_key_is_refused_and_changes_nothing(offline: Services) -> None:
    before = offline.keyring.active_issuer().ca_id

    with pytest.raises(OfflineKeyError):
        offline.authorities.rotate(actor="test")

    assert offline.keyring.active_issuer().ca_id == before
    assert len(offline.authorities.list()) == 2


def test_rotation_with_another_key_is_refused(offline: Services) -> None:
    with pytest.raises(InvalidRequestError, match="not the root CA's key"):
        offline.authorities.rotate(actor="test", root_key=ec.generate_private_key(ec.SECP384R1()))


def test_rotation_with_the_root_key_resigns_the_root_crl(
    offline: Services, root_key: PrivateKey, clock: FixedClock
) -> None:
    number = root_crl(offline).extensions.get_extension_for_class(x509.CRLNumber).value
    clock.advance(days=1)

    new = offline.authorities.rotate(actor="test", root_key=root_key)

    assert offline.keyring.active_issuer().ca_id == new.ca_id
    new.certificate.verify_directly_issued_by(offline.keyring.root().certificate)
    crl = root_crl(offline)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
        number.crl_number + 1
    )
    assert crl.last_update_utc == clock.now()
    assert offline.keyring.root().offline, "the process kept the offline key after rotating"


def test_sign_root_crl_renews_it(
    offline: Services, root_key: PrivateKey, clock: FixedClock
) -> None:
    clock.advance(days=300)

    published = offline.authorities.sign_root_crl(root_key, actor="local:ops")

    assert published.ca_id == offline.keyring.root().ca_id
    assert published.next_update == clock.now() + ROOT_CRL_VALIDITY
    assert root_crl(offline).is_signature_valid(root_key.public_key())  # type: ignore[arg-type]  # an EC key
    assert offline.keyring.root().offline
    entry = offline.audit.newest(limit=1)[0]
    assert (entry.action, entry.actor, entry.target) == (
        "ca.root_crl",
        "local:ops",
        published.ca_id,
    )


def test_rotation_validity_stays_within_the_root(offline: Services, root_key: PrivateKey) -> None:
    new = offline.authorities.rotate(
        actor="test", root_key=root_key, validity=timedelta(days=36500)
    )

    assert (
        new.certificate.not_valid_after_utc
        == offline.keyring.root().certificate.not_valid_after_utc
    )
