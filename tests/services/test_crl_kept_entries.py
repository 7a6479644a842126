"""Publication at scale: the crls table stays bounded (pruned in the publishing transaction),
the entries kept between publications always equal what the database says (other processes,
expiry, holds, rollbacks), and revocations arriving together share one CRL number."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text

from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.crls import BASE_SLOTS
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db

OPENSSL = "/usr/bin/openssl"
THREADS = 8


def crl_rows(services: Services, ca_id: str) -> list[tuple[int, bool, int]]:
    """(number, is_delta, DER length) of the CA's rows in the crls table."""
    with services.db.read() as session:
        rows = session.execute(
            text(
                "SELECT number, is_delta, coalesce(size, length(der)) FROM crls WHERE ca_id = :ca "
                "ORDER BY number, is_delta"
            ),
            {"ca": ca_id},
        ).all()
    return [(int(n), bool(d), int(size or 0)) for n, d, size in rows]


def listed(services: Services, ca_id: str, *, delta: bool = False) -> dict[int, str]:
    """serial -> reason name (or 'none') of the latest full (or delta) CRL."""
    crl = x509.load_der_x509_crl(services.crls.latest(ca_id, delta=delta).der)
    reasons = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = "none"
        reasons[entry.serial_number] = reason
    return reasons


def revoke(services: Services, serial: str, reason: str = "keyCompromise") -> None:
    services.revocation.revoke(serial, reason=reason, invalidity_date=None, actor="test")


def openssl_verify(services: Services, leaf: x509.Certificate, tmp_path: Path) -> str:
    """`openssl verify -crl_check -use_deltas` of `leaf` with the served full and delta CRL,
    at the test clock's time."""
    issuing = services.keyring.active_issuer()
    ca_id = issuing.ca_id
    crls = tmp_path / "crls.pem"
    crls.write_bytes(
        b"".join(
            x509.load_der_x509_crl(services.crls.latest(ca_id, delta=d).der).public_bytes(
                Encoding.PEM
            )
            for d in (False, True)
        )
    )
    chain = tmp_path / "chain.pem"
    chain.write_bytes(issuing.certificate.public_bytes(Encoding.PEM))
    root = tmp_path / "root.pem"
    root.write_bytes(services.keyring.root().certificate.public_bytes(Encoding.PEM))
    cert = tmp_path / "leaf.pem"
    cert.write_bytes(leaf.public_bytes(Encoding.PEM))
    done = subprocess.run(
        [
            OPENSSL,
            "verify",
            "-crl_check",
            "-use_deltas",
            "-attime",
            str(int(services.clock.now().timestamp())),
            "-CAfile",
            root,
            "-untrusted",
            chain,
            "-CRLfile",
            crls,
            cert,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"{done.stdout}{done.stderr}[exit {done.returncode}]"


def openssl_crl_verify(services: Services, *, delta: bool, tmp_path: Path) -> str:
    """`openssl crl -verify` of the served full (or delta) CRL against the issuing CA."""
    issuing = services.keyring.active_issuer()
    crl = tmp_path / ("delta.der" if delta else "full.der")
    crl.write_bytes(services.crls.latest(issuing.ca_id, delta=delta).der)
    ca = tmp_path / "issuing.pem"
    ca.write_bytes(issuing.certificate.public_bytes(Encoding.PEM))
    done = subprocess.run(
        [OPENSSL, "crl", "-inform", "DER", "-in", crl, "-CAfile", ca, "-noout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"{done.stdout}{done.stderr}[exit {done.returncode}]"


# --- pruning -------------------------------------------------------------------------------------


def test_many_revocations_leave_a_bounded_table_and_verifiable_crls(
    services: Services, clock: FixedClock, tmp_path: Path
) -> None:
    """Each revocation used to leave a full and a delta CRL behind (issue 12: 300 revocations,
    604 rows). Now: the latest full and delta with DER, and superseded full CRLs only as delta
    bases, at most one per slot of validity/BASE_SLOTS, without DER."""
    ca_id = services.keyring.active_issuer().ca_id
    good = enroll_via_services(services)
    revoked = [enroll_via_services(services) for _ in range(30)]
    slot = services.crls.validity / BASE_SLOTS
    for issued in revoked:
        revoke(services, issued.serial)
        clock.advance(seconds=slot.total_seconds() / 3)  # 30 revocations over 10 slots

    rows = crl_rows(services, ca_id)
    number = services.crls.latest(ca_id).number
    with_der = [(n, d) for n, d, size in rows if size > 0]
    assert with_der == [(number, False), (number, True)], rows
    bases = [n for n, d, size in rows if not d and n < number]
    assert all(size == 0 for n, d, size in rows if n < number), rows
    assert len(bases) <= 11, f"one base per slot at most: {rows}"
    assert len(rows) <= 13, rows

    delta = x509.load_der_x509_crl(services.crls.latest(ca_id, delta=True).der)
    base = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
    assert base in bases, (base, rows)
    assert set(listed(services, ca_id)) == {i.certificate.serial_number for i in revoked}
    accepted = openssl_verify(services, good.certificate, tmp_path)
    assert accepted.endswith("[exit 0]"), accepted
    assert ": OK" in accepted, accepted
    refused = openssl_verify(services, revoked[-1].certificate, tmp_path)
    assert "certificate revoked" in refused, refused
    for delta in (False, True):
        checked = openssl_crl_verify(services, delta=delta, tmp_path=tmp_path)
        assert "verify OK" in checked, checked
        assert checked.endswith("[exit 0]"), checked


def test_bases_past_their_next_update_are_deleted(services: Services, clock: FixedClock) -> None:
    ca_id = services.keyring.active_issuer().ca_id
    for _ in range(3):
        revoke(services, enroll_via_services(services).serial)
        clock.advance(hours=5)
    clock.advance(hours=25)  # every CRL so far is past its nextUpdate

    published = services.crls.publish_now(ca_id)

    assert crl_rows(services, ca_id) == [
        (published.number, False, len(published.der)),
        (published.number, True, len(services.crls.latest(ca_id, delta=True).der)),
    ]
    delta = x509.load_der_x509_crl(services.crls.latest(ca_id, delta=True).der)
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
    assert indicator.crl_number == published.number, "the only current full CRL is the base"


# --- kept entries --------------------------------------------------------------------------------


def test_kept_entries_follow_holds_and_other_processes(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    """A second process (own Services, own kept entries) changes statuses; the first one's
    next CRL shows every change, exactly as a publication from scratch would."""
    ca_id = services.keyring.active_issuer().ca_id
    a, b, c = (enroll_via_services(services) for _ in range(3))
    revoke(services, a.serial)  # the first process now keeps entries
    other = Services(initialised_settings, clock=clock)
    try:
        revoke(other, b.serial, "certificateHold")
        revoke(other, c.serial, "certificateHold")
        other.revocation.unhold(c.serial, actor="test")
        revoke(other, b.serial, "superseded")  # a hold moving to a final reason
    finally:
        other.close()

    services.crls.publish_now(ca_id)

    expected = {
        a.certificate.serial_number: "key_compromise",
        b.certificate.serial_number: "superseded",
    }
    assert listed(services, ca_id) == expected
    fresh = Services(services.settings, clock=clock)  # nothing kept: read from the database
    try:
        fresh.crls.publish_now(ca_id)
        assert listed(fresh, ca_id) == expected
    finally:
        fresh.close()


def test_expired_certificates_leave_the_kept_entries(services: Services, clock: FixedClock) -> None:
    ca_id = services.keyring.active_issuer().ca_id
    short = enroll_via_services(services, validity_days=1)
    long = enroll_via_services(services)
    revoke(services, short.serial)
    revoke(services, long.serial)
    assert set(listed(services, ca_id)) == {
        short.certificate.serial_number,
        long.certificate.serial_number,
    }

    # RFC 5280 §3.3: listed until one CRL validity past notAfter, then gone.
    clock.advance(days=3)
    services.crls.publish_now(ca_id)

    assert set(listed(services, ca_id)) == {long.certificate.serial_number}


def test_a_rolled_back_publication_leaves_nothing_behind(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept entries follow what committed: a revocation whose transaction fails after the
    CRL was built is on no later CRL."""
    ca_id = services.keyring.active_issuer().ca_id
    kept, lost = enroll_via_services(services), enroll_via_services(services)
    revoke(services, kept.serial)

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit write failed")

    monkeypatch.setattr("app.services.status_batches.record", fail)
    with pytest.raises(RuntimeError, match="audit write failed"):
        revoke(services, lost.serial)
    monkeypatch.undo()
    services.crls.publish_now(ca_id)

    assert set(listed(services, ca_id)) == {kept.certificate.serial_number}
    assert services.certificates.get(lost.serial).revoked_at is None


# --- coalesced publication -----------------------------------------------------------------------


def test_revocations_arriving_together_share_commits_and_lose_nothing(
    services: Services,
) -> None:
    ca_id = services.keyring.active_issuer().ca_id
    before = services.crls.latest(ca_id).number
    issued = [enroll_via_services(services) for _ in range(THREADS * 3)]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            for certificate in issued[index::THREADS]:
                revoke(services, certificate.serial)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    after = services.crls.latest(ca_id).number
    assert before < after <= before + len(issued)
    assert set(listed(services, ca_id)) >= {i.certificate.serial_number for i in issued}
    numbers = [
        e.details["crl_number"]
        for e in services.audit.newest(limit=1000)
        if e.action == "certificate.revoke"
    ]
    assert len(numbers) == len(issued)
    assert all(before < n <= after for n in numbers), numbers


def test_a_refused_change_does_not_fail_its_batch(services: Services) -> None:
    """Each change in a batch succeeds or fails on its own (409 for one, 200 for the rest)."""
    issued = enroll_via_services(services)
    revoke(services, issued.serial)
    other = enroll_via_services(services)
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def run(serial: str) -> None:
        barrier.wait(timeout=30)
        try:
            revoke(services, serial)
            outcomes[serial] = "revoked"
        except Exception as exc:  # the expected ConflictError, by name
            outcomes[serial] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(s,)) for s in (issued.serial, other.serial)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert outcomes == {issued.serial: "ConflictError", other.serial: "revoked"}
