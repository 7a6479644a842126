"""Bulk revocation `POST /admin/revocations`: a dry run changes nothing; a real one revokes
every match in one transaction with one CRL number per CA, visible in the CRL and in OCSP;
an empty filter is refused; one audit row names the action."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from app.ca.ocsp import issuer_hashes
from app.clock import FixedClock
from app.db.models import CertificateRecord
from app.services.container import Services
from app.services.crl_entries import encode_entry

pytestmark = pytest.mark.db

Problem = Callable[..., dict[str, Any]]
BULK = 10_000
OCSP_BATCH = 10  # CertIDs per OCSP request


def add_certificates(
    services: Services,
    count: int,
    *,
    profile: str = "peer",
    name: str = "bulk",
    token_id: str | None = None,
    created_days_ago: int = 1,
    revoked_reason: str | None = None,
) -> list[str]:
    """`count` certificate rows of the active issuing CA, inserted in one statement (their
    DER is a placeholder: CRLs and OCSP need serials and statuses only)."""
    now = services.clock.now()
    ca_id = services.keyring.active_issuer().ca_id
    serials = [format(secrets.randbits(159) | 1 << 158, "x") for _ in range(count)]
    revoked_at = now - timedelta(hours=1) if revoked_reason else None
    rows = [
        {
            "serial": serial,
            "ca_id": ca_id,
            "profile": profile,
            "common_name": f"{name}-{n}.internal",
            "names": [f"{name}-{n}.internal"],
            "names_text": f"{name}-{n}.internal",
            "not_before": now - timedelta(days=created_days_ago),
            "not_after": now + timedelta(days=30),
            "der": b"\x00",
            "token_id": token_id,
            "created_at": now - timedelta(days=created_days_ago),
            "revoked_at": revoked_at,
            "revocation_reason": revoked_reason,
            "crl_entry": encode_entry(serial, revoked_at, revoked_reason, None)
            if revoked_at is not None
            else None,
        }
        for n, serial in enumerate(serials)
    ]
    with services.db.write() as session:
        session.execute(insert(CertificateRecord), rows)
    return sorted(serials)


def snapshot(services: Services) -> tuple[Any, ...]:
    """What a dry run must leave alone: statuses, CRLs, CRL counters, audit rows."""
    with services.db.read() as session:
        return tuple(
            tuple(session.execute(text(sql)).all())
            for sql in (
                "SELECT serial, revoked_at, revocation_reason, status_crl_number, crl_entry "
                "FROM certificates ORDER BY serial",
                "SELECT ca_id, number, is_delta, der FROM crls ORDER BY ca_id, number, is_delta",
                "SELECT id, crl_number FROM cas ORDER BY id",
                "SELECT count(*) FROM audit_log",
            )
        )


def bulk(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/admin/revocations", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def crl_serials(services: Services, ca_id: str) -> dict[int, x509.RevokedCertificate]:
    crl = x509.load_der_x509_crl(services.crls.latest(ca_id).der)
    return {entry.serial_number: entry for entry in crl}


def ocsp_statuses(services: Services, serials: list[str]) -> dict[str, ocsp.OCSPCertStatus]:
    """The OCSP status of each serial, asked OCSP_BATCH CertIDs per request (built with
    asn1crypto: cryptography's builder takes one CertID)."""
    issuer = services.keyring.active_issuer().certificate
    name_hash, key_hash = issuer_hashes(issuer, "sha1")
    statuses = {}
    for start in range(0, len(serials), OCSP_BATCH):
        cert_ids = [
            {
                "req_cert": {
                    "hash_algorithm": {"algorithm": "sha1"},
                    "issuer_name_hash": name_hash,
                    "issuer_key_hash": key_hash,
                    "serial_number": int(serial, 16),
                }
            }
            for serial in serials[start : start + OCSP_BATCH]
        ]
        der = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": cert_ids}}).dump()
        response = ocsp.load_der_ocsp_response(services.ocsp.respond(der).der)
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        for single in response.responses:
            statuses[format(single.serial_number, "x")] = single.certificate_status
    return statuses


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"filter": {}, "reason": "keyCompromise", "dry_run": False}, id="empty filter"
        ),
        pytest.param({"filter": {"q": ""}, "reason": "keyCompromise"}, id="blank q only"),
        pytest.param(
            {"filter": {"profile": "peer"}, "reason": "removeFromCRL"}, id="removeFromCRL"
        ),
        pytest.param({"filter": {"profile": "peer"}, "reason": "1"}, id="reason as a number"),
        pytest.param({"filter": {"profile": "peer"}}, id="no reason"),
        pytest.param({"filter": {"nope": 1}, "reason": "superseded"}, id="unknown filter field"),
        pytest.param(
            {"filter": {"issued_before": "2026-01-01T00:00:00"}, "reason": "superseded"},
            id="naive time",
        ),
    ],
)
def test_refused_and_nothing_changes(
    admin_client: TestClient, services: Services, problem: Problem, body: dict[str, Any]
) -> None:
    add_certificates(services, 3)
    before = snapshot(services)

    problem(admin_client.post("/admin/revocations", json=body), 400)

    assert snapshot(services) == before


# --- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        pytest.param({"profile": "client"}, "client", id="profile"),
        pytest.param({"q": "WEB-"}, "web", id="q, case-insensitive"),
        pytest.param({"token_id": "tok1"}, "token", id="token_id"),
        pytest.param({"issued_before": "OLD"}, "old", id="issued_before"),
        pytest.param(
            {"issued_after": "NEW", "profile": "peer"}, "new", id="issued_after + profile"
        ),
    ],
)
def test_filters_select_what_they_name(
    admin_client: TestClient,
    services: Services,
    clock: FixedClock,
    filter_: dict[str, str],
    expected: str,
) -> None:
    groups = {
        "client": add_certificates(services, 2, profile="client", name="c"),
        "web": add_certificates(services, 2, name="web"),
        "token": add_certificates(services, 2, name="t", token_id="tok1"),
        "old": add_certificates(services, 2, name="o", created_days_ago=60),
        "new": add_certificates(services, 2, name="n", created_days_ago=0),
    }
    times = {
        "OLD": (clock.now() - timedelta(days=30)).isoformat(),
        "NEW": (clock.now() - timedelta(hours=12)).isoformat(),
    }
    criteria = {key: times.get(value, value) for key, value in filter_.items()}

    dry = bulk(admin_client, {"filter": criteria, "reason": "superseded"})
    done = bulk(admin_client, {"filter": criteria, "reason": "superseded", "dry_run": False})

    assert dry == {**done, "dry_run": True, "crl_numbers": {}}, (dry, done)
    assert done["serials"] == groups[expected], done
    assert done["count"] == len(groups[expected])


# --- a bulk revocation ---------------------------------------------------------------------------


def test_holds_move_to_the_final_reason_and_keep_their_date(
    admin_client: TestClient, services: Services
) -> None:
    held = add_certificates(services, 2, name="held", revoked_reason="certificateHold")
    fresh = add_certificates(services, 1, name="held-too")
    ca_id = services.keyring.active_issuer().ca_id
    hold_dates = {s: services.certificates.get(s).revoked_at for s in held}

    on_hold_only = bulk(
        admin_client, {"filter": {"q": "held"}, "reason": "certificateHold", "dry_run": True}
    )
    done = bulk(
        admin_client, {"filter": {"q": "held"}, "reason": "keyCompromise", "dry_run": False}
    )

    assert on_hold_only["serials"] == fresh, "a hold applies only to certificates not revoked"
    assert done["serials"] == sorted(held + fresh), done
    entries = crl_serials(services, ca_id)
    for serial in held:
        info = services.certificates.get(serial)
        assert info.revocation_reason == "keyCompromise"
        assert info.revoked_at == hold_dates[serial], "a hold that becomes final keeps its date"
        reason = entries[int(serial, 16)].extensions.get_extension_for_class(x509.CRLReason)
        assert reason.value.reason == x509.ReasonFlags.key_compromise


@pytest.mark.slow
def test_ten_thousand_in_one_crl_number_visible_in_ocsp(
    admin_client: TestClient, services: Services
) -> None:
    """Issue 10: a bulk revocation of 10,000 certificates is one CRL number, visible in OCSP
    for all of them, and a dry run changes nothing."""
    serials = add_certificates(services, BULK)
    bystanders = add_certificates(services, 5, profile="client", name="keep")
    ca_id = services.keyring.active_issuer().ca_id
    number = services.crls.latest(ca_id).number
    last_audit_id = max(e.id for e in services.audit.newest(limit=1000))
    before = snapshot(services)

    dry = bulk(admin_client, {"filter": {"profile": "peer"}, "reason": "keyCompromise"})

    assert snapshot(services) == before, "a dry run changed something"
    assert dry["count"] == BULK, {k: v for k, v in dry.items() if k != "serials"}
    assert dry["serials"] == serials[:100]

    done = bulk(
        admin_client, {"filter": {"profile": "peer"}, "reason": "keyCompromise", "dry_run": False}
    )

    assert done["count"] == BULK
    assert done["serials"] == serials[:100]
    assert done["crl_numbers"] == {ca_id: number + 1}, done["crl_numbers"]
    assert services.crls.latest(ca_id).number == number + 1, "one CRL number for all of them"
    listed = crl_serials(services, ca_id)
    assert {int(s, 16) for s in serials} <= set(listed)
    assert not {int(s, 16) for s in bystanders} & set(listed)
    delta = x509.load_der_x509_crl(services.crls.latest(ca_id, delta=True).der)
    assert {int(s, 16) for s in serials} <= {e.serial_number for e in delta}
    statuses = ocsp_statuses(services, serials + bystanders)
    assert {s for s in serials if statuses[s] != ocsp.OCSPCertStatus.REVOKED} == set()
    assert {statuses[s] for s in bystanders} == {ocsp.OCSPCertStatus.GOOD}
    audit = [
        e
        for e in services.audit.newest(limit=1000)
        if e.id > last_audit_id and e.action.endswith(("revoke", "unhold"))
    ]
    assert [e.action for e in audit] == ["certificate.bulk_revoke"], "one row for the action"
    assert audit[0].details["count"] == BULK
    assert audit[0].details["filter"] == {"profile": "peer"}
    assert audit[0].details["crl_numbers"] == {ca_id: number + 1}

    again = bulk(
        admin_client, {"filter": {"profile": "peer"}, "reason": "keyCompromise", "dry_run": False}
    )
    assert again == {"count": 0, "serials": [], "dry_run": False, "crl_numbers": {}}
