"""A full CRL stored in parts (crl_parts) and kept per process: whatever path a publication
takes (kept parts, parts another process wrote, a restart, entries cut one by one or in one
pass, parts stored whole before migration 0015), its entries are exactly those a CRL built
from scratch from the certificates table lists, byte for byte; OpenSSL accepts it; numbers
only grow; and a reader never gets a CRL with a part missing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from sqlalchemy import select, text

from app.ca.crl_der import serial_key
from app.clock import FixedClock
from app.config import Settings
from app.db.models import CertificateRecord
from app.errors import ServiceUnavailableError
from app.services import crl_entries
from app.services.container import Services
from tests.helpers import enroll_via_services
from tests.services.test_crl_kept_entries import openssl_crl_verify, openssl_verify, revoke

pytestmark = pytest.mark.db

READS = 40


def served_entries(services: Services, ca_id: str) -> list[bytes]:
    """The DER of each entry of the served full CRL, sorted."""
    der = services.crls.latest(ca_id).der
    revoked = asn1_crl.CertificateList.load(der)["tbs_cert_list"]["revoked_certificates"]
    return sorted(entry.dump() for entry in revoked)


def expected_entries(services: Services, ca_id: str) -> list[bytes]:
    """What a CRL built from scratch lists: the stored entry of every revoked certificate
    not expired by the latest CRL's cutoff (thisUpdate less one validity), sorted."""
    cutoff = services.crls.latest(ca_id).this_update - services.crls.validity
    with services.db.read() as session:
        rows = session.execute(
            select(CertificateRecord.crl_entry, CertificateRecord.not_after).where(
                CertificateRecord.ca_id == ca_id, CertificateRecord.crl_entry.is_not(None)
            )
        ).all()
    return sorted(bytes(entry) for entry, not_after in rows if not_after > cutoff)


def stored_parts(services: Services, ca_id: str) -> tuple[list[int], list[int]]:
    """(the part ids the latest full CRL lists, every part id of the CA in crl_parts)."""
    with services.db.read() as session:
        listed = session.execute(
            text(
                "SELECT parts FROM crls WHERE ca_id = :ca AND is_delta = :delta"
                " ORDER BY number DESC LIMIT 1"
            ),
            {"ca": ca_id, "delta": False},
        ).scalar_one()
        present = session.execute(
            text("SELECT id FROM crl_parts WHERE ca_id = :ca ORDER BY id"), {"ca": ca_id}
        ).scalars()
        return [int(i) for i in listed.split(",") if i], [int(i) for i in present]


def assert_as_from_scratch(services: Services, ca_id: str, numbers: list[int]) -> None:
    published = services.crls.latest(ca_id)
    assert not numbers or published.number > numbers[-1], (numbers, published.number)
    numbers.append(published.number)
    served, expected = served_entries(services, ca_id), expected_entries(services, ca_id)
    assert served == expected, (
        f"served {len(served)} entries, expected {len(expected)}: "
        f"missing {[e.hex() for e in expected if e not in served]}, "
        f"extra {[e.hex() for e in served if e not in expected]}"
    )
    listed, present = stored_parts(services, ca_id)
    assert sorted(listed) == present, "every stored part is used, none is missing"


@pytest.mark.parametrize("max_cuts", [16, 0], ids=["cut one by one", "cut in one pass"])
def test_incremental_crls_equal_crls_built_from_scratch(
    services: Services,
    initialised_settings: Settings,
    clock: FixedClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_cuts: int,
) -> None:
    monkeypatch.setattr(crl_entries, "PART_BYTES", 300)  # four or five entries a part
    monkeypatch.setattr(crl_entries, "MAX_CUTS", max_cuts)
    ca_id = services.keyring.active_issuer().ca_id
    numbers: list[int] = []
    short = enroll_via_services(services, validity_days=1)
    issued = [enroll_via_services(services) for _ in range(14)]
    for n, certificate in enumerate(issued[:10]):
        reason = ["keyCompromise", "superseded", "unspecified", "certificateHold"][n % 4]
        revoke(services, certificate.serial, reason)
        clock.advance(seconds=7)
    services.revocation.revoke(
        short.serial, reason="keyCompromise", invalidity_date=clock.now(), actor="test"
    )
    assert_as_from_scratch(services, ca_id, numbers)

    # Another process changes statuses: it reads the parts this one wrote, cuts and appends.
    other = Services(initialised_settings, clock=clock)
    try:
        revoke(other, issued[10].serial, "certificateHold")
        other.revocation.unhold(issued[3].serial, actor="test")  # a hold in the first part
        revoke(other, issued[7].serial, "cessationOfOperation")  # a hold to a final reason
        assert_as_from_scratch(other, ca_id, numbers)
    finally:
        other.close()

    # This process again: its kept parts are behind the database's.
    revoke(services, issued[11].serial)
    services.revocation.unhold(issued[10].serial, actor="test")
    assert_as_from_scratch(services, ca_id, numbers)

    # Expiry: the one-day certificate leaves one validity past its notAfter (RFC 5280 §3.3).
    clock.advance(days=3)
    services.crls.publish_now(ca_id)
    assert_as_from_scratch(services, ca_id, numbers)
    assert short.certificate.serial_number not in {
        e.serial_number for e in x509.load_der_x509_crl(services.crls.latest(ca_id).der)
    }

    # A restarted process: nothing kept, every part read.
    restarted = Services(initialised_settings, clock=clock)
    try:
        revoke(restarted, issued[12].serial, "affiliationChanged")
        assert_as_from_scratch(restarted, ca_id, numbers)
    finally:
        restarted.close()

    accepted = openssl_verify(services, issued[13].certificate, tmp_path)
    assert accepted.endswith("[exit 0]"), accepted
    refused = openssl_verify(services, issued[12].certificate, tmp_path)
    assert "certificate revoked" in refused, refused
    for delta in (False, True):
        checked = openssl_crl_verify(services, delta=delta, tmp_path=tmp_path)
        assert "verify OK" in checked, checked
        assert checked.endswith("[exit 0]"), checked


def test_a_crl_stored_whole_is_served_and_the_next_one_stored_in_parts(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    """A full CRL from before migration 0015 (DER whole, no parts) is served as it is; the
    next publication, in a fresh process, reads every entry from the certificates table."""
    ca_id = services.keyring.active_issuer().ca_id
    revoked = [enroll_via_services(services) for _ in range(3)]
    for certificate in revoked:
        revoke(services, certificate.serial)
    whole = services.crls.latest(ca_id)
    with services.db.write() as session:
        session.execute(text("DELETE FROM crl_parts WHERE ca_id = :ca"), {"ca": ca_id})
        session.execute(
            text(
                "UPDATE crls SET der = :der, parts = NULL, entries_at = NULL, size = NULL"
                " WHERE ca_id = :ca AND number = :number AND is_delta = :delta"
            ),
            {"der": whole.der, "ca": ca_id, "number": whole.number, "delta": False},
        )
    assert services.crls.latest(ca_id).der == whole.der

    fresh = Services(initialised_settings, clock=clock)
    try:
        revoke(fresh, enroll_via_services(fresh).serial)
        assert_as_from_scratch(fresh, ca_id, [whole.number])
        assert len(served_entries(fresh, ca_id)) == 4
    finally:
        fresh.close()


def test_a_crl_whose_part_is_gone_is_never_served(services: Services) -> None:
    """A part deleted under a reader (a later publication replaced it) makes the read start
    again; a part that stays missing is a 503, never a CRL without those entries."""
    ca_id = services.keyring.active_issuer().ca_id
    revoke(services, enroll_via_services(services).serial)
    listed, _ = stored_parts(services, ca_id)
    with services.db.write() as session:
        session.execute(text("DELETE FROM crl_parts WHERE id = :id"), {"id": listed[0]})

    with pytest.raises(ServiceUnavailableError, match="changed while it was read"):
        services.crls.latest(ca_id)


def test_readers_during_publications_always_get_a_whole_signed_crl(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    """A second process reads the latest full CRL while this one revokes (each revocation
    replaces the last part): every read is a complete CRL whose signature verifies, with
    numbers that never go down."""
    issuing = services.keyring.active_issuer()
    certificates = [enroll_via_services(services) for _ in range(12)]
    revoke(services, certificates[0].serial)
    reader = Services(initialised_settings, clock=clock)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set() or len(seen) < READS:
                crl = x509.load_der_x509_crl(reader.crls.latest(issuing.ca_id).der)
                if not crl.is_signature_valid(issuing.certificate.public_key()):  # type: ignore[arg-type]  # CA keys only
                    raise AssertionError(f"CRL {crl.extensions} does not verify")
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
                seen.append((number, len(crl)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for certificate in certificates[1:]:
            revoke(services, certificate.serial)
    finally:
        done.set()
        thread.join(timeout=120)
        reader.close()

    assert not errors, errors
    assert [n for n, _ in seen] == sorted(n for n, _ in seen), seen
    assert all(size == number - seen[0][0] + seen[0][1] for number, size in seen), seen


def delta_as_from_scratch(services: Services, ca_id: str) -> None:
    """The served delta CRL lists exactly the certificates whose status changed after its
    base: the stored entry of each revoked one, removeFromCRL for each released hold."""
    delta = x509.load_der_x509_crl(services.crls.latest(ca_id, delta=True).der)
    base = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number
    served = {
        f"{entry.serial_number:x}": (
            "removeFromCRL"
            if entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            == x509.ReasonFlags.remove_from_crl
            else "revoked"
        )
        if any(isinstance(e.value, x509.CRLReason) for e in entry.extensions)
        else "revoked"
        for entry in delta
    }
    with services.db.read() as session:
        rows = session.execute(
            select(CertificateRecord.serial, CertificateRecord.crl_entry).where(
                CertificateRecord.ca_id == ca_id, CertificateRecord.status_crl_number > base
            )
        ).all()
    expected = {
        format(int(serial, 16), "x"): "revoked" if entry is not None else "removeFromCRL"
        for serial, entry in rows
    }
    assert served == expected, (base, served, expected)


def test_deltas_stay_right_when_processes_publish_in_turn(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    """Two processes publishing by turns each carry their delta's changes over what the
    other published (they are not read again from the delta's base every time): each delta
    still lists every change since its base, holds released included."""
    ca_id = services.keyring.active_issuer().ca_id
    issued = [enroll_via_services(services) for _ in range(8)]
    other = Services(initialised_settings, clock=clock)
    try:
        steps = [
            (services, lambda s, c: revoke(s, c.serial, "certificateHold")),
            (other, lambda s, c: revoke(s, c.serial, "keyCompromise")),
            (services, lambda s, c: revoke(s, c.serial, "superseded")),
            (other, lambda s, c: s.revocation.unhold(issued[0].serial, actor="test")),
            (services, lambda s, c: revoke(s, c.serial, "certificateHold")),
            (other, lambda s, c: revoke(s, issued[4].serial, "keyCompromise")),
            (services, lambda s, c: revoke(s, c.serial)),
        ]
        for (process, step), certificate in zip(steps, issued, strict=False):
            step(process, certificate)
            clock.advance(seconds=5)
            delta_as_from_scratch(process, ca_id)
            delta_as_from_scratch(services if process is other else other, ca_id)
    finally:
        other.close()


def test_new_entries_fill_small_tail_parts_that_merge_up_to_a_part() -> None:
    """One entry at a time (single revocations): an append changes only the tail part, of
    at most PART_BYTES // TAIL_SHARE (what a publication stores and another process reads
    again), unless it closes the tail, whose merges rewrite each entry about log2(TAIL_SHARE)
    times in all; parts stay at most about PART_BYTES, few stay below it, and the runs hold
    every entry once, in order."""
    entries = crl_entries._Entries(as_of=1, cutoff=datetime.now(UTC), parts=[], listed={})
    tail = crl_entries.PART_BYTES // crl_entries.TAIL_SHARE
    appended, merged = [], 0
    for n in range(40_000):  # about 1.6 MB of entries
        serial = format(n + 1 << 64, "x")
        entry = crl_entries.encode_entry(serial, datetime.now(UTC), None, None)
        entries.append(serial_key(serial), entry)
        appended.append(entry)
        changed = [part for part in entries.parts if part.id is None]
        if entries.parts[-1].der == entry:  # closed the tail, opened a new one
            merged += sum(len(part.der) for part in changed[:-1])
        else:
            assert changed == [entries.parts[-1]]
            assert len(changed[0].der) < tail + len(entry)
        for part in entries.parts:
            part.id = part.id or n + 1  # stored, as a publication would

    total = sum(map(len, appended))
    sizes = [len(part.der) for part in entries.parts]
    assert max(sizes) <= crl_entries.PART_BYTES + tail
    assert len([size for size in sizes if size < crl_entries.PART_BYTES]) <= 6, sizes
    assert 0 < merged <= 5 * total  # log2(16) merges an entry, and the merge it ends in
    assert b"".join(entries.runs()) == b"".join(appended)
    assert len(entries.listed) == len(appended)
