"""The OCSP cache's guarantees where they live: a status change (revoke, hold, hold to a final
reason, unhold) empties the cache of every process before the change returns, nonce requests
are signed afresh, the cache is bounded in bytes and serves while the database is down, a
request names at most 20 certificates, a revoked responder is replaced at once, and reason
`unspecified` reads the same in OCSP as on the CRL (absent)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.ca.ocsp import MAX_CERT_IDS
from app.clock import FixedClock
from app.config import Settings
from app.db.status_events import CHANNEL, StatusListener
from app.services.container import Services
from app.services.enrollment import IssuedCertificate
from app.services.ocsp import OCSPService
from tests.helpers import enroll_via_services
from tests.services.test_ocsp_service import (
    check_signed_by,
    combine,
    ocsp_request,
    responder_of,
    successful,
)

pytestmark = pytest.mark.db

REVOKED, GOOD = ocsp.OCSPCertStatus.REVOKED, ocsp.OCSPCertStatus.GOOD
HOLD = x509.ReasonFlags.certificate_hold
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@pytest.fixture
def leaf(services: Services) -> IssuedCertificate:
    return enroll_via_services(services)


@pytest.fixture
def issuing_ca(services: Services) -> x509.Certificate:
    return services.keyring.active_issuer().certificate


@pytest.fixture
def replica(initialised_settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """Another process on the same data dir and database: its own Services and caches."""
    built = Services(initialised_settings, clock=clock)
    try:
        yield built
    finally:
        built.close()


def status_of(der: bytes) -> tuple[ocsp.OCSPCertStatus, x509.ReasonFlags | None]:
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, response.response_status
    return response.certificate_status, response.revocation_reason


def hold(services: Services, leaf: IssuedCertificate) -> None:
    services.revocation.revoke(
        leaf.serial, reason="certificateHold", invalidity_date=None, actor="test"
    )


def fill(process: Services, request: bytes) -> bytes:
    """Sign and cache an answer. On PostgreSQL the NOTIFY of an earlier change may still
    arrive and empty the cache once (harmless: it only makes the next answer fresh)."""
    for _ in range(50):
        der = process.ocsp.respond(request).der
        cached = process.ocsp.answer_cached(request)
        if cached is not None and cached.der == der:
            return der
        time.sleep(0.05)
    pytest.fail("the cache was not filled")


# (what happens before the cache is filled, the change, the status every process must show)
TRANSITIONS = [
    pytest.param(None, "keyCompromise", (REVOKED, KEY_COMPROMISE), id="good to keyCompromise"),
    pytest.param(None, "certificateHold", (REVOKED, HOLD), id="good to hold"),
    pytest.param("hold", "keyCompromise", (REVOKED, KEY_COMPROMISE), id="hold to keyCompromise"),
    pytest.param("hold", "unhold", (GOOD, None), id="hold to good (unhold)"),
]


@pytest.mark.parametrize(("before", "change", "expected"), TRANSITIONS)
def test_a_status_change_empties_the_cache_of_every_process_before_it_returns(
    services: Services,
    replica: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    before: str | None,
    change: str,
    expected: tuple[ocsp.OCSPCertStatus, x509.ReasonFlags | None],
) -> None:
    if before == "hold":
        hold(services, leaf)
    request = ocsp_request(leaf.certificate, issuing_ca)
    old = {"services": fill(services, request), "replica": fill(replica, request)}

    clock.advance(seconds=5)
    if change == "unhold":
        services.revocation.unhold(leaf.serial, actor="test")
    else:
        services.revocation.revoke(leaf.serial, reason=change, invalidity_date=None, actor="test")

    for name, process in (("services", services), ("replica", replica)):
        cached = process.ocsp.answer_cached(request)
        assert cached is None or cached.der != old[name], (
            f"{name} still serves its cached answer ({status_of(old[name])}) after {change}"
        )
        assert status_of(process.ocsp.respond(request).der) == expected, name


def test_another_host_hears_the_change_through_postgresql(
    services: Services,
    initialised_settings: Settings,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    tmp_path: Path,
) -> None:
    """A process with a data dir of its own shares only the database: on PostgreSQL it hears
    the change through LISTEN/NOTIFY (SQLite has no other host)."""
    if services.db.is_sqlite:
        pytest.skip("other hosts share only PostgreSQL")
    elsewhere_dir = tmp_path / "elsewhere"
    elsewhere_dir.mkdir()
    settings = initialised_settings.model_copy(update={"data_dir": elsewhere_dir})
    elsewhere = Services(settings, clock=clock)
    try:
        request = ocsp_request(leaf.certificate, issuing_ca)
        assert status_of(elsewhere.ocsp.respond(request).der) == (GOOD, None)
        time.sleep(0.2)  # the listener thread is connected
        hold(services, leaf)
        deadline = time.monotonic() + 5
        while elsewhere.ocsp.answer_cached(request) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert elsewhere.ocsp.answer_cached(request) is None, "no NOTIFY reached the other host"
        assert status_of(elsewhere.ocsp.respond(request).der) == (REVOKED, HOLD)
    finally:
        elsewhere.close()


def test_nonce_requests_are_signed_afresh_from_the_pre_signed_statuses(
    services: Services, clock: FixedClock, leaf: IssuedCertificate, issuing_ca: x509.Certificate
) -> None:
    plain = services.ocsp.respond(ocsp_request(leaf.certificate, issuing_ca))
    clock.advance(minutes=3)
    nonces = [os.urandom(16), os.urandom(16)]
    answers = []
    for nonce in [*nonces, nonces[0]]:
        fast = services.ocsp.answer_cached(ocsp_request(leaf.certificate, issuing_ca, nonce=nonce))
        assert fast is not None, "a nonce request for pre-signed statuses takes the fast path"
        response = ocsp.load_der_ocsp_response(fast.der)
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        assert echoed == nonce, "RFC 6960 §4.4.1: the nonce must be echoed"
        assert response.produced_at_utc == clock.now(), "a nonce answer is signed now"
        check_signed_by(response, responder_of(response).public_key(), "the responder")
        assert response.certificate_status == GOOD
        assert not fast.cacheable
        answers.append(fast.der)
    assert plain.der not in answers
    assert len(set(answers)) == len(answers), "a nonce answer was repeated, not signed afresh"


def test_answers_are_served_while_the_database_is_down_until_they_expire(
    services: Services,
    clock: FixedClock,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = ocsp_request(leaf.certificate, issuing_ca)
    signed = services.ocsp.respond(request)

    def down() -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(services.db, "read", down)
    monkeypatch.setattr(services.db, "write", down)
    clock.advance(hours=7)  # past the refresh point (half of 12 h), inside the validity
    assert services.ocsp.respond(request).der == signed.der
    with_nonce = services.ocsp.respond(ocsp_request(leaf.certificate, issuing_ca, nonce=b"n1"))
    assert status_of(with_nonce.der) == (GOOD, None), "a nonce answer is signed from the cache"

    clock.advance(hours=5, seconds=1)  # past nextUpdate: nothing true is left to send
    response = ocsp.load_der_ocsp_response(services.ocsp.respond(request).der)
    assert response.response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR


def test_the_cache_is_bounded_in_bytes(
    services: Services, clock: FixedClock, leaf: IssuedCertificate, issuing_ca: x509.Certificate
) -> None:
    limit = 3000  # room for one entry (about 2.3 KB: key, answer and its reusable parts)
    bounded = OCSPService(
        services.db,
        clock,
        services.keyring,
        services.responders,
        validity=services.settings.ocsp_validity,
        delegated=True,
        signal=services.status_signal,
        cache_max_bytes=limit,
    )
    requests = [
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf.certificate, issuing_ca, algorithm)
        .build()
        .public_bytes(Encoding.DER)
        for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512())
    ]
    for request in requests:
        bounded.respond(request)
        assert 0 < bounded.cache_bytes <= limit
    assert bounded.answer_cached(requests[0]) is None, "the oldest answer is evicted first"
    assert bounded.answer_cached(requests[-1]) is not None, "the newest answer is kept"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        pytest.param(MAX_CERT_IDS, "successful", id="20 CertIDs: answered"),
        pytest.param(MAX_CERT_IDS + 1, "malformed", id="21 CertIDs: malformedRequest"),
    ],
)
def test_a_request_names_at_most_20_certificates(
    services: Services,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    count: int,
    expected: str,
) -> None:
    request = combine(*[ocsp_request(leaf.certificate, issuing_ca)] * count)
    response = ocsp.load_der_ocsp_response(services.ocsp.respond(request).der)
    if expected == "malformed":
        assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        assert services.ocsp.cache_bytes == 0
    else:
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert len(list(response.responses)) == count


@pytest.mark.parametrize("reason", ["keyCompromise", "certificateHold"])
def test_a_revoked_or_held_responder_is_replaced_at_once(
    services: Services,
    replica: Services,
    leaf: IssuedCertificate,
    issuing_ca: x509.Certificate,
    reason: str,
) -> None:
    request = ocsp_request(leaf.certificate, issuing_ca)
    old = responder_of(successful(services, request))
    assert responder_of(successful(replica, request)).serial_number == old.serial_number

    services.revocation.revoke(
        f"{old.serial_number:x}", reason=reason, invalidity_date=None, actor="test"
    )

    for name, process in (("services", services), ("replica", replica)):
        for nonce in (None, b"fresh"):
            response = successful(process, ocsp_request(leaf.certificate, issuing_ca, nonce=nonce))
            new = responder_of(response)
            assert new.serial_number != old.serial_number, (
                f"{name} still signs with the {reason} responder (nonce {nonce!r})"
            )
            new.verify_directly_issued_by(issuing_ca)
            check_signed_by(response, new.public_key(), "the new responder")
    assert (
        responder_of(successful(replica, request)).serial_number
        == responder_of(successful(services, request)).serial_number
    ), "both processes should use the one new responder"


def test_reason_unspecified_is_absent_in_ocsp_as_on_the_crl(
    services: Services, leaf: IssuedCertificate, issuing_ca: x509.Certificate
) -> None:
    services.revocation.revoke(
        leaf.serial, reason="unspecified", invalidity_date=None, actor="test"
    )

    response = successful(services, ocsp_request(leaf.certificate, issuing_ca))
    assert response.certificate_status == REVOKED
    assert response.revocation_reason is None, "RFC 5280 §5.3.1: no reason code for unspecified"
    ca_id = services.keyring.active_issuer().ca_id
    crl = x509.load_der_x509_crl(services.crls.latest(ca_id).der)
    entry = crl.get_revoked_certificate_by_serial_number(leaf.certificate.serial_number)
    assert entry is not None
    reasons = [e for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
    assert reasons == [], "the CRL entry carries no reason code for unspecified either"


def test_a_listener_that_lost_postgresql_reports_a_possible_change_when_back(
    services: Services,
) -> None:
    """A notification sent while the listener was away is lost; so reconnecting counts as a
    change (and empties the caches), never as silence. No NOTIFY is sent here, so the only
    way `calls` grows is the reconnect. Every LISTEN connection of this database is cut again
    until it does: one round may miss this listener (not yet connected, or between retries),
    which is what made an exact count of terminated connections flaky."""
    if services.db.is_sqlite:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    calls: list[int] = []
    listener = StatusListener(services.db, lambda: calls.append(1))
    listener.start()
    try:
        deadline = time.monotonic() + 30  # generous: a loaded CI machine connects slowly
        terminated = 0
        while not calls and time.monotonic() < deadline:
            with services.db.write() as session:
                terminated += len(
                    session.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND query = :listen"
                        ),
                        {"listen": f"LISTEN {CHANNEL}"},
                    ).all()
                )
            time.sleep(0.2)
        assert terminated, "no listener ever connected"
        assert calls, f"cut {terminated} times, the listener never reported a possible change"
    finally:
        listener.stop()
