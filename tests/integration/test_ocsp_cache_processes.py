"""The OCSP cache across processes, over real sockets: two `mintca serve` processes with two
workers each on one data dir and database. Every worker's cache is filled (GET and POST, no
nonce) before each status change; after the change's 200, no worker of either process may
answer with the old status. Connections are fresh per request, so the kernel spreads them over
both workers of a process (24 per method and process: a worker missed by all has odds 2^-23)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from app.config import Settings
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.db, pytest.mark.slow]

REQUESTS_PER_METHOD = 24
Status = tuple[str, x509.ReasonFlags | None]


@pytest.fixture
def servers(initialised_settings: Settings, tmp_path: Path) -> Iterator[list[LiveServer]]:
    started = []
    try:
        for name in ("a", "b"):
            started.append(
                start_server(initialised_settings, tmp_path / f"serve-{name}.log", workers=2)
            )
        yield [server for _, server in started]
    finally:
        for process, _ in started:
            stop_server(process)


def enroll(server: LiveServer) -> tuple[str, x509.Certificate, x509.Certificate]:
    with server.admin_client() as admin:
        made = admin.post(
            "/admin/tokens",
            json={"profile": "server", "names": ["cache.test.internal"], "ttl_seconds": 600},
        )
    assert made.status_code == 201, made.text
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cache.test.internal")]))
        .sign(key, hashes.SHA256())
    )
    with server.public_client() as public:
        answer = public.post(
            "/v1/certificates",
            json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
            headers={"Authorization": f"Bearer {made.json()['token']}"},
        )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    return body["serial"], leaf, x509.load_pem_x509_certificate(body["chain"][0].encode())


def statuses_seen(server: LiveServer, request_der: bytes) -> dict[Status, int]:
    """Ask with GET and POST, each on a fresh connection; count the statuses answered."""
    seen: dict[Status, int] = {}
    path = "/ocsp/" + quote(base64.b64encode(request_der).decode(), safe="")
    for _ in range(REQUESTS_PER_METHOD):
        for answer in (
            httpx.get(server.public_url + path, timeout=10),
            httpx.post(
                server.public_url + "/ocsp",
                content=request_der,
                headers={"Content-Type": "application/ocsp-request"},
                timeout=10,
            ),
        ):
            assert answer.status_code == 200, answer.text
            response = ocsp.load_der_ocsp_response(answer.content)
            assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            status: Status = (response.certificate_status.name, response.revocation_reason)
            seen[status] = seen.get(status, 0) + 1
    return seen


def change(server: LiveServer, serial: str, reason: str) -> None:
    with server.admin_client() as admin:
        answer = admin.post(f"/admin/certificates/{serial}/revoke", json={"reason": reason})
    assert answer.status_code == 200, answer.text


def test_no_worker_of_any_process_answers_a_stale_status_after_the_change(
    servers: list[LiveServer],
) -> None:
    serial, leaf, issuing = enroll(servers[0])
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, issuing, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    steps: list[tuple[str | None, Status]] = [
        (None, ("GOOD", None)),
        ("certificateHold", ("REVOKED", x509.ReasonFlags.certificate_hold)),
        ("keyCompromise", ("REVOKED", x509.ReasonFlags.key_compromise)),
    ]
    for reason, expected in steps:
        if reason is not None:
            change(servers[1], serial, reason)  # through the other process than it enrolled
        for name, server in zip(("a", "b"), servers, strict=True):
            seen = statuses_seen(server, request)
            assert seen == {expected: 2 * REQUESTS_PER_METHOD}, (
                f"process {name} after {reason or 'enrollment'}: expected only {expected}, "
                f"answered {seen}"
            )
