"""CRL publication: scheduled republication (once, even with several processes), full and
delta CRLs numbered together (RFC 5280 §5.2.3, §5.2.4), entries kept until their certificate has
expired (RFC 5280 §3.3) and written as RFC 5280 §5.3 says."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta, timezone

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from sqlalchemy import text

from app.clock import FixedClock
from app.config import Settings
from app.errors import NotFoundError
from app.services.container import Services
from app.services.crls import PublishedCRL
from app.services.setup import InitReport
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db

PROCESSES = 4


# --- helpers -------------------------------------------------------------------------------------


def load(published: PublishedCRL) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(published.der)


def full_and_delta(
    services: Services, ca_id: str
) -> tuple[x509.CertificateRevocationList, x509.CertificateRevocationList]:
    return load(services.crls.latest(ca_id)), load(services.crls.latest(ca_id, delta=True))


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def delta_base(crl: x509.CertificateRevocationList) -> int:
    extension = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert extension.critical, "RFC 5280 §5.2.4: the DeltaCRLIndicator MUST be critical"
    return extension.value.crl_number


def listed(crl: x509.CertificateRevocationList) -> set[int]:
    return {entry.serial_number for entry in crl}


def crl_rows(services: Services) -> list[tuple[str, int, bool]]:
    with services.db.read() as session:
        rows = session.execute(
            text("SELECT ca_id, number, is_delta FROM crls ORDER BY ca_id, number, is_delta")
        ).all()
    return [(str(ca_id), int(number), bool(is_delta)) for ca_id, number, is_delta in rows]


def ca_ids(report: InitReport) -> list[str]:
    return [report.root_ca_id, report.issuing_ca_id]


# --- scheduled republication ---------------------------------------------------------------------


def test_nothing_is_due_right_after_init(services: Services) -> None:
    before = crl_rows(services)

    assert services.crls.republish_due() == []
    assert crl_rows(services) == before, "republish_due published although nothing was due"


def test_republishes_every_ca_past_half_the_validity(
    services: Services, clock: FixedClock, initialised_report: InitReport
) -> None:
    assert services.crls.validity == timedelta(hours=24), "the default MINTCA_CRL_VALIDITY"
    previous = {ca_id: services.crls.latest(ca_id).number for ca_id in ca_ids(initialised_report)}

    clock.advance(hours=12, minutes=1)
    published = services.crls.republish_due()

    assert sorted(p.ca_id for p in published) == sorted(previous), (
        f"expected one publication per CA (root and issuing), got {published}"
    )
    for publication in published:
        ca_id = publication.ca_id
        assert publication.number > previous[ca_id], (ca_id, publication.number, previous)
        assert publication.this_update == clock.now()
        assert publication.next_update == clock.now() + timedelta(hours=24)
        full, delta = full_and_delta(services, ca_id)
        authority = services.keyring.get(ca_id)
        for crl in (full, delta):
            assert crl_number(crl) == publication.number
            assert crl.last_update_utc == clock.now()
            assert crl.is_signature_valid(authority.certificate.public_key())  # type: ignore[arg-type]  # EC keys
    again = services.crls.republish_due()
    assert again == [], f"published again at the same instant: {again}"


def test_republish_due_publishes_once_with_several_processes(
    services: Services,
    clock: FixedClock,
    initialised_settings: Settings,
    initialised_report: InitReport,
) -> None:
    """Several processes (own Services, own engine) run the scheduler at the same moment: the
    check repeated under the CA row's lock lets exactly one of them publish per CA."""
    previous = {ca_id: services.crls.latest(ca_id).number for ca_id in ca_ids(initialised_report)}
    before = set(crl_rows(services))
    replicas = [Services(initialised_settings, clock=clock) for _ in range(PROCESSES)]
    barrier = threading.Barrier(PROCESSES)
    results: list[list[PublishedCRL]] = [[] for _ in replicas]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = replicas[index].crls.republish_due()
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(exc)

    clock.advance(hours=13)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(PROCESSES)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for replica in replicas:
            replica.close()

    assert not errors, f"republish_due failed in a replica: {errors!r}"
    published = [p for result in results for p in result]
    assert sorted((p.ca_id, p.number) for p in published) == sorted(
        (ca_id, number + 1) for ca_id, number in previous.items()
    ), f"expected exactly one publication per CA, got {[(p.ca_id, p.number) for p in published]}"
    new_rows = sorted(set(crl_rows(services)) - before)
    assert new_rows == sorted(
        (ca_id, number + 1, is_delta)
        for ca_id, number in previous.items()
        for is_delta in (False, True)
    ), f"the crls table should hold one new full and one new delta CRL per CA: {new_rows}"


# --- full and delta CRLs -------------------------------------------------------------------------


def test_full_and_delta_share_their_number_and_the_base_moves_forward(
    services: Services, clock: FixedClock, initialised_settings: Settings
) -> None:
    ca_id = services.keyring.active_issuer().ca_id
    first_full, _ = full_and_delta(services, ca_id)
    first = crl_number(first_full)

    clock.advance(hours=13)
    services.crls.republish_due()
    full, delta = full_and_delta(services, ca_id)
    assert crl_number(full) == crl_number(delta) == first + 1, (
        "RFC 5280 §5.2.3: a full and a delta CRL issued together share their number"
    )
    assert delta_base(delta) == first, (
        f"the init CRL {first} is still within its nextUpdate, so it is the oldest current base"
    )

    clock.advance(hours=12)  # > 24 h after init: the init CRL has passed its nextUpdate
    services.crls.republish_due()
    full, delta = full_and_delta(services, ca_id)
    assert crl_number(full) == crl_number(delta) == first + 2
    assert delta_base(delta) == first + 1, "the base moves to the oldest full CRL still current"

    freshest = full.extensions.get_extension_for_class(x509.FreshestCRL).value
    urls = [name.value for point in freshest for name in point.full_name or []]
    assert urls == [f"{initialised_settings.base_url}/crl/{ca_id}-delta.crl"]
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    with pytest.raises(x509.ExtensionNotFound):
        delta.extensions.get_extension_for_class(x509.FreshestCRL)


def test_a_revocation_is_on_the_full_crl_and_the_delta(services: Services) -> None:
    issued = enroll_via_services(services)
    ca_id = services.keyring.active_issuer().ca_id

    services.revocation.revoke(
        issued.serial, reason="keyCompromise", invalidity_date=None, actor="test"
    )

    full, delta = full_and_delta(services, ca_id)
    serial_number = issued.certificate.serial_number
    assert serial_number in listed(full)
    assert serial_number in listed(delta), f"delta (base {delta_base(delta)}) misses the change"


# --- entries and expiry --------------------------------------------------------------------------


def test_entry_stays_until_its_certificate_has_expired(
    services: Services, clock: FixedClock
) -> None:
    """RFC 5280 §3.3: "An entry MUST NOT be removed from the CRL until it appears on one
    regularly scheduled CRL issued beyond the revoked certificate's validity period." So the
    entry is on every CRL up to notAfter and on the first one after it, and gone two days
    later."""
    issued = enroll_via_services(services, validity_days=1)
    ca_id = services.keyring.active_issuer().ca_id
    serial_number = issued.certificate.serial_number
    not_after = issued.certificate.not_valid_after_utc
    services.revocation.revoke(issued.serial, reason="superseded", invalidity_date=None, actor="t")

    steps = [
        ("just before notAfter", not_after - timedelta(minutes=1), True),
        ("first CRL after notAfter", not_after + timedelta(seconds=1), True),
        ("two days after notAfter", not_after + timedelta(days=2), False),
    ]
    for label, at, expected in steps:
        clock.advance(seconds=(at - clock.now()).total_seconds())
        published = services.crls.publish_now(ca_id)
        on_crl = serial_number in listed(load(published))
        assert on_crl is expected, (
            f"{label} (CRL {published.number} at {at:%Y-%m-%d %H:%M:%S}, notAfter "
            f"{not_after:%Y-%m-%d %H:%M:%S}): entry {'missing' if expected else 'still listed'}"
        )


REASONS = [
    pytest.param("unspecified", None, id="unspecified/no reason extension"),
    pytest.param("keyCompromise", x509.ReasonFlags.key_compromise, id="keyCompromise"),
    pytest.param("cACompromise", x509.ReasonFlags.ca_compromise, id="cACompromise"),
    pytest.param(
        "affiliationChanged", x509.ReasonFlags.affiliation_changed, id="affiliationChanged"
    ),
    pytest.param("superseded", x509.ReasonFlags.superseded, id="superseded"),
    pytest.param(
        "cessationOfOperation", x509.ReasonFlags.cessation_of_operation, id="cessationOfOperation"
    ),
    pytest.param("certificateHold", x509.ReasonFlags.certificate_hold, id="certificateHold"),
    pytest.param(
        "privilegeWithdrawn", x509.ReasonFlags.privilege_withdrawn, id="privilegeWithdrawn"
    ),
    pytest.param("aACompromise", x509.ReasonFlags.aa_compromise, id="aACompromise"),
]


@pytest.mark.parametrize(("reason", "expected"), REASONS)
def test_entry_carries_reason_and_invalidity_date(
    services: Services, clock: FixedClock, reason: str, expected: x509.ReasonFlags | None
) -> None:
    issued = enroll_via_services(services)
    # Given in a +02:00 offset; RFC 5280 §5.3.2 wants GeneralizedTime in UTC ("Z").
    invalid_since = (clock.now() - timedelta(days=3)).astimezone(timezone(timedelta(hours=2)))
    services.revocation.revoke(
        issued.serial, reason=reason, invalidity_date=invalid_since, actor="test"
    )

    crl = load(services.crls.latest(services.keyring.active_issuer().ca_id))
    entry = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
    assert entry is not None, f"{issued.serial} is not on CRL {crl_number(crl)}"
    assert entry.revocation_date_utc == clock.now()
    reasons = [e.value for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
    if expected is None:
        assert reasons == [], "RFC 5280 §5.3.1: `unspecified` SHOULD be written as no reason code"
    else:
        assert [r.reason for r in reasons] == [expected]
    invalidity = entry.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalidity.invalidity_date_utc == invalid_since
    encoded = asn1_core.GeneralizedTime.load(invalidity.public_bytes())
    utc_text = invalid_since.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")
    assert encoded.contents.decode() == utc_text, "the invalidity date must be encoded in UTC"


def test_latest_of_an_unknown_ca_is_not_found(services: Services) -> None:
    with pytest.raises(NotFoundError):
        services.crls.latest("00" * 20)
    with pytest.raises(NotFoundError):
        services.crls.latest("no-such-ca", delta=True)
