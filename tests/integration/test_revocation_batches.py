"""Single revocations over real mTLS against a live two-worker `mintca serve`, where they take
the fast path (app.api.revoke_fast) and share batches (app.services.status_batches):

- concurrent revocations all land, each with its audit row, the chain verifies
  (`mintca audit verify`), OCSP says revoked right after each 200, and the CRL fetched after
  the last 200 lists every one;
- a revoked operator is refused on its next request on every keep-alive connection it holds,
  although its earlier requests were accepted from the peer cache;
- `kill -9` in the middle of batches loses no revocation that got its 200.

On SQLite (always: the database of this test's own for the crash) and on PostgreSQL when
MINTCA_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from app.config import Settings
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server
from tests.integration.test_crash_safety import (  # the crash test's database and its kill
    crash,
    crash_settings,  # noqa: F401  # a fixture, used by name
    read_database,
)
from tests.integration.test_roles_live import admin_issue, mintca

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.slow]

WORKERS = 2
REVOKERS = 8
PER_REVOKER = 4
TIMEOUT = 120


@pytest.fixture
def two_workers(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=WORKERS)
    try:
        yield server
    finally:
        stop_server(process)


def active_ca(admin: httpx.Client) -> str:
    return str(next(ca["ca_id"] for ca in admin.get("/admin/cas").json() if ca["active"]))


def enroll_many(server: LiveServer, count: int) -> dict[str, x509.Certificate]:
    with server.admin_client() as admin, server.public_client() as public:
        made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": count})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        enrolled = {}
        for number in range(count):
            answer = public.post(
                "/v1/certificates",
                json={"csr": csr_pem(f"r{number}.batch.internal")},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text
            body = answer.json()
            enrolled[body["serial"]] = x509.load_pem_x509_certificate(body["certificate"].encode())
    return enrolled


def ocsp_status(
    public: httpx.Client, certificate: x509.Certificate, issuer: x509.Certificate
) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
    answer = public.post(
        "/ocsp",
        content=request.public_bytes(Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    response = ocsp.load_der_ocsp_response(answer.content)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status.name
    return response.certificate_status.name


def test_concurrent_revocations_all_land_audited_and_published(
    two_workers: LiveServer, tmp_path: Path
) -> None:
    server = two_workers
    certificates = enroll_many(server, REVOKERS * PER_REVOKER)
    serials = sorted(certificates)
    with server.admin_client() as admin, server.public_client() as public:
        ca_id = active_ca(admin)
        issuer = x509.load_der_x509_certificate(public.get(f"/ca/{ca_id}.crt").content)
    barrier = threading.Barrier(REVOKERS, timeout=TIMEOUT)

    def revoke_share(index: int) -> list[tuple[str, int, str, str]]:
        """Revoke this thread's serials on one keep-alive connection; OCSP after each 200."""
        seen = []
        with server.admin_client() as admin, server.public_client() as public:
            admin.get("/admin/cas").raise_for_status()  # the handshake, before the start
            barrier.wait()
            for serial in serials[index::REVOKERS]:
                answer = admin.post(
                    f"/admin/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
                )
                status = ocsp_status(public, certificates[serial], issuer)
                seen.append((serial, answer.status_code, answer.text, status))
        return seen

    with ThreadPoolExecutor(max_workers=REVOKERS) as pool:
        outcomes = [
            item
            for future in [pool.submit(revoke_share, n) for n in range(REVOKERS)]
            for item in future.result(timeout=TIMEOUT)
        ]

    for serial, status_code, body, ocsp_answer in outcomes:
        assert status_code == 200, body
        assert '"status":"revoked"' in body, body
        assert ocsp_answer == "REVOKED", f"{serial}: OCSP said {ocsp_answer} after the 200"
    with server.admin_client() as admin, server.public_client() as public:
        crl = x509.load_der_x509_crl(public.get(f"/crl/{ca_id}.crl").content)
        audit = admin.get("/admin/audit", params={"action": "certificate.revoke", "limit": 1000})
    listed = {format(entry.serial_number, "x") for entry in crl}
    assert set(serials) <= listed, f"missing from the CRL: {set(serials) - listed}"
    assert audit.status_code == 200, audit.text
    targets = [item["target"] for item in audit.json()["items"]]
    assert sorted(targets) == serials, audit.text
    assert all(item["details"]["reason"] == "keyCompromise" for item in audit.json()["items"])
    verified = mintca(server, "audit", "verify")
    assert verified.returncode == 0, verified


def test_a_revoked_operator_is_refused_on_every_connection(
    two_workers: LiveServer, tmp_path: Path
) -> None:
    server = two_workers
    cert, key = admin_issue(server, "operator", "op", tmp_path / "op")
    targets = sorted(enroll_many(server, 12))
    connections = [server.mtls_client(cert, key) for _ in range(6)]
    try:
        for client, serial in zip(connections, targets, strict=False):
            accepted = client.post(
                f"/admin/certificates/{serial}/revoke", json={"reason": "superseded"}
            )
            assert accepted.status_code == 200, accepted.text
            assert client.get("/admin/cas").status_code == 200  # accepted, now cached
        operator_serial = format(
            x509.load_pem_x509_certificate(cert.read_bytes()).serial_number, "x"
        )
        with server.admin_client() as admin:
            revoked = admin.post(
                f"/admin/certificates/{operator_serial}/revoke", json={"reason": "keyCompromise"}
            )
            assert revoked.status_code == 200, revoked.text
            for client, serial in zip(connections, targets[6:], strict=True):
                refused = client.post(
                    f"/admin/certificates/{serial}/revoke", json={"reason": "superseded"}
                )
                assert refused.status_code == 403, refused.text
                assert refused.json()["type"].endswith("peer-rejected"), refused.text
                shown = admin.get(f"/admin/certificates/{serial}").json()
                assert shown["status"] == "good", shown
    finally:
        for client in connections:
            client.close()


KILL_TARGETS = 80
KILL_REVOKERS = 16
ENOUGH_ANSWERED = 20
LOAD_SECONDS = 30


def test_kill_9_mid_batch_loses_no_answered_revocation(
    crash_settings: Settings,  # noqa: F811  # the imported fixture
    tmp_path: Path,
) -> None:
    process, server = start_server(crash_settings, tmp_path / "serve-1.log", workers=WORKERS)
    answered: set[str] = set()
    lock = threading.Lock()
    try:
        certificates = enroll_many(server, KILL_TARGETS)
        with server.admin_client() as admin:
            ca_id = active_ca(admin)
        pending: queue.Queue[str] = queue.Queue()
        for serial in certificates:
            pending.put(serial)
        stop = threading.Event()

        def revoke_until_crash() -> None:
            with server.admin_client() as admin:
                while not stop.is_set():
                    try:
                        serial = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        answer = admin.post(
                            f"/admin/certificates/{serial}/revoke", json={"reason": "superseded"}
                        )
                    except httpx.TransportError:
                        return  # cut off by the crash
                    if answer.status_code == 200:
                        with lock:
                            answered.add(serial)

        threads = [threading.Thread(target=revoke_until_crash) for _ in range(KILL_REVOKERS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline and len(answered) < ENOUGH_ANSWERED:
            time.sleep(0.005)
        crash(process)  # revocations are in flight, batches with them
        stop.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
            assert not thread.is_alive(), "a revoker did not stop after the crash"
    finally:
        stop_server(process)
    with lock:
        told = set(answered)
    assert len(told) >= ENOUGH_ANSWERED, f"only {len(told)} answered before the crash"

    stored = read_database(crash_settings, ca_id)
    assert told <= stored.revoked, f"answered 200, lost: {sorted(told - stored.revoked)}"
    process, server = start_server(crash_settings, tmp_path / "serve-2.log", workers=WORKERS)
    try:
        with server.admin_client() as admin, server.public_client() as public:
            spare = next(s for s in certificates if s not in stored.revoked)
            again = admin.post(f"/admin/certificates/{spare}/revoke", json={"reason": "superseded"})
            assert again.status_code == 200, again.text
            crl = x509.load_der_x509_crl(public.get(f"/crl/{ca_id}.crl").content)
            issuer = x509.load_der_x509_certificate(public.get(f"/ca/{ca_id}.crt").content)
            statuses = {s: ocsp_status(public, certificates[s], issuer) for s in sorted(told)}
    finally:
        stop_server(process)
    listed = {format(entry.serial_number, "x") for entry in crl}
    assert stored.revoked & set(certificates) <= listed, "a committed revocation is not on the CRL"
    assert set(statuses.values()) == {"REVOKED"}, statuses
