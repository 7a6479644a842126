"""Two `mintca serve` processes on one PostgreSQL database revoke at the same time.

SPEC: a revocation is visible in OCSP at once and in the next CRL, published at once with a
strictly greater CRL number, "even with several MintCA processes sharing one PostgreSQL". The
CA row's lock is what orders the numbers; this test races revocations through both processes
(revocations arriving together in one process share a CRL number) and then checks the CRLs
they served over HTTP and what the pruned `crls` table keeps.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import select

from app.config import Settings
from app.db.crls import whole_der
from app.db.engine import Database
from app.db.models import CARecord, CRLRecord
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.db,
    pytest.mark.skipif(
        not os.environ.get("MINTCA_TEST_DATABASE_URL"),
        reason="needs PostgreSQL: set MINTCA_TEST_DATABASE_URL (two processes share one database)",
    ),
]

CERTIFICATES = 12
TIMEOUT = 120  # seconds for any one thread's work; HTTP calls have their own 30 s timeouts


@dataclass(frozen=True)
class Issued:
    serial: str
    certificate: x509.Certificate
    issuing: x509.Certificate


@dataclass(frozen=True)
class Outcome:
    """What one racing thread saw: its revocation, then a CRL and OCSP right after it."""

    serial: str
    via: str
    revoke_status: int
    revoke_body: str
    crl_number: int
    crl_der: bytes
    crl_serials: frozenset[int]
    ocsp_elsewhere: ocsp.OCSPCertStatus  # asked of the other process


@pytest.fixture
def servers(initialised_settings: Settings, tmp_path: Path) -> Iterator[dict[str, LiveServer]]:
    """Two processes, one database and data dir: what a replicated deployment looks like."""
    started: list[Any] = []
    try:
        named = {}
        for name in ("a", "b"):
            process, server = start_server(initialised_settings, tmp_path / f"serve-{name}.log")
            started.append(process)
            named[name] = server
        yield named
    finally:
        for process in started:
            stop_server(process)


def enroll(public: httpx.Client, token: str, name: str) -> Issued:
    answer = public.post(
        "/v1/certificates",
        json={"csr": csr_pem(name)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return Issued(
        serial=body["serial"],
        certificate=x509.load_pem_x509_certificate(body["certificate"].encode()),
        issuing=x509.load_pem_x509_certificate(body["chain"][0].encode()),
    )


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def ocsp_status(public: httpx.Client, issued: Issued) -> ocsp.OCSPCertStatus:
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, issued.issuing, hashes.SHA1())
        .build()
    )
    answer = public.post(
        "/ocsp",
        content=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert answer.status_code == 200, answer.text
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.content.hex()
    return response.certificate_status


def race(servers: dict[str, LiveServer], ca_id: str, certificates: list[Issued]) -> list[Outcome]:
    """Revoke every certificate at once, half through each process; each thread then fetches
    the full CRL from the process it used and asks the other process's OCSP responder."""
    barrier = threading.Barrier(len(certificates), timeout=TIMEOUT)
    names = sorted(servers)

    def revoke(index: int) -> Outcome:
        via, other = names[index % 2], names[(index + 1) % 2]
        issued = certificates[index]
        with (
            servers[via].admin_client() as admin,
            servers[via].public_client() as public,
            servers[other].public_client() as elsewhere,
        ):
            admin.get("/admin/cas").raise_for_status()  # the TLS handshake, before the start
            barrier.wait()
            answer = admin.post(
                f"/admin/certificates/{issued.serial}/revoke", json={"reason": "keyCompromise"}
            )
            fetched = public.get(f"/crl/{ca_id}.crl")
            assert fetched.status_code == 200, fetched.text
            crl = x509.load_der_x509_crl(fetched.content)
            return Outcome(
                serial=issued.serial,
                via=via,
                revoke_status=answer.status_code,
                revoke_body=answer.text,
                crl_number=crl_number(crl),
                crl_der=fetched.content,
                crl_serials=frozenset(entry.serial_number for entry in crl),
                ocsp_elsewhere=ocsp_status(elsewhere, issued),
            )

    with ThreadPoolExecutor(max_workers=len(certificates)) as pool:
        futures = [pool.submit(revoke, index) for index in range(len(certificates))]
        return [future.result(timeout=TIMEOUT) for future in futures]


@dataclass(frozen=True)
class Published:
    number: int
    delta_base: int | None
    this_update: datetime
    crl: x509.CertificateRevocationList | None  # None: a superseded full CRL kept as a base


def published_crls(settings: Settings, ca_id: str) -> tuple[list[Published], int]:
    """Every CRL of the CA in the `crls` table, by number, and the CA row's counter."""
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            rows = session.scalars(
                select(CRLRecord)
                .where(CRLRecord.ca_id == ca_id)
                .order_by(CRLRecord.number, CRLRecord.is_delta)
            ).all()
            counter = session.scalars(select(CARecord.crl_number).where(CARecord.id == ca_id)).one()
            published = [
                Published(
                    r.number,
                    r.delta_base,
                    r.this_update,
                    x509.load_der_x509_crl(b"".join(whole_der(session, r) or []))
                    if r.der
                    else None,
                )
                for r in rows
            ]
    finally:
        db.dispose()
    return published, counter


def test_two_processes_revoking_at_once(
    servers: dict[str, LiveServer], initialised_settings: Settings
) -> None:
    a, b = servers["a"], servers["b"]
    with a.admin_client() as admin, a.public_client() as public_a, b.public_client() as public_b:
        token = admin.post(
            "/admin/tokens", json={"names": ["*.internal"], "max_uses": CERTIFICATES}
        )
        assert token.status_code == 201, token.text
        cas = admin.get("/admin/cas").json()
        ca_id = next(ca["ca_id"] for ca in cas if ca["active"])
        certificates = [
            enroll((public_a, public_b)[i % 2], token.json()["token"], f"race-{i}.internal")
            for i in range(CERTIFICATES)
        ]
        published_before, _ = published_crls(initialised_settings, ca_id)

        outcomes = race(servers, ca_id, certificates)

        finals = {
            name: client.get(f"/crl/{ca_id}.crl")
            for name, client in (("a", public_a), ("b", public_b))
        }
        deltas = {
            name: client.get(f"/crl/{ca_id}-delta.crl")
            for name, client in (("a", public_a), ("b", public_b))
        }
        audit = admin.get("/admin/audit", params={"limit": 1000})
    published, counter = published_crls(initialised_settings, ca_id)

    revoked = {int(issued.serial, 16) for issued in certificates}
    report = "\n".join(
        f"{o.via}: {o.serial} -> {o.revoke_status}, then CRL #{o.crl_number}, "
        f"other OCSP {o.ocsp_elsewhere.name}"
        for o in outcomes
    )
    table = "\n".join(
        f"#{p.number} base={p.delta_base} thisUpdate={p.this_update.isoformat()} "
        f"entries={len(list(p.crl)) if p.crl is not None else '(base only)'}"
        for p in published
    )

    # Every revocation succeeded, showed in the next CRL of its own process and, at once, in
    # the other process's OCSP answers.
    for outcome in outcomes:
        assert outcome.revoke_status == 200, f"{outcome.revoke_body}\n{report}"
        assert int(outcome.serial, 16) in outcome.crl_serials, report
        assert outcome.ocsp_elsewhere == ocsp.OCSPCertStatus.REVOKED, report
    # A CRL number names one CRL, whichever process served it.
    by_number: dict[int, bytes] = {}
    for outcome in outcomes:
        assert by_number.setdefault(outcome.crl_number, outcome.crl_der) == outcome.crl_der, report

    # Both processes serve the same latest CRLs, and they list every revoked serial.
    for name, answer in (*finals.items(), *deltas.items()):
        assert answer.status_code == 200, f"{name}: {answer.text}"
    assert finals["a"].content == finals["b"].content, table
    assert deltas["a"].content == deltas["b"].content, table
    final = x509.load_der_x509_crl(finals["a"].content)
    delta = x509.load_der_x509_crl(deltas["a"].content)
    assert revoked <= {e.serial_number for e in final}, f"lost revocations\n{table}"
    assert revoked <= {e.serial_number for e in delta}, f"lost revocations in the delta\n{table}"

    # The audit log names the CRL number of each revocation; revocations that committed
    # together share theirs (coalesced publication), and the CRL its thread fetched right
    # after the 200 is that one or a newer one.
    assert audit.status_code == 200, audit.text
    audit_numbers = {
        e["target"]: e["details"]["crl_number"]
        for e in audit.json()["items"]
        if e["action"] == "certificate.revoke" and int(e["target"], 16) in revoked
    }
    assert len(audit_numbers) == CERTIFICATES, audit.text
    for outcome in outcomes:
        assert audit_numbers[outcome.serial] <= outcome.crl_number, report

    # Every fetched CRL, by number: a greater number never lists less (no revocation is lost
    # when publications race) and is never issued earlier (a relying party that picks the
    # newest CRL by thisUpdate must get the one with the greatest number).
    by_crl_number = {o.crl_number: x509.load_der_x509_crl(o.crl_der) for o in outcomes}
    fetched = [*sorted(by_crl_number.items()), (crl_number(final), final)]
    for (number, earlier), (later_number, later) in itertools.pairwise(fetched):
        assert {e.serial_number for e in earlier} <= {e.serial_number for e in later}, (
            f"#{later_number} dropped entries of #{number}\n{report}"
        )
        assert earlier.last_update_utc <= later.last_update_utc, report

    # In the table, after pruning: one delta and one full CRL with DER, both the latest and
    # carrying the CA's counter; older full CRLs only as delta bases, without DER. Numbers
    # moved by at least one and at most one per revocation (coalesced).
    deltas_left = [p for p in published if p.delta_base is not None]
    full_left = [p for p in published if p.delta_base is None]
    assert [p.number for p in deltas_left] == [counter], table
    assert [p.number for p in full_left if p.crl is not None] == [counter], table
    assert len({p.number for p in full_left}) == len(full_left), table
    assert counter == crl_number(final) == crl_number(delta), table
    before = max(p.number for p in published_before)
    assert before < counter <= before + CERTIFICATES, table
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical, table
    assert indicator.value.crl_number in {p.number for p in full_left}, table
