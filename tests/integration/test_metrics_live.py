"""/metrics on a real `mintca serve` with 2 workers over real sockets: every scrape, whichever
worker answers it, shows the same totals, and they move after enrollment, OCSP and
revocation (renewal adds one more case once POST /v1/renew exists)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2
SCRAPES = 8  # each on a new connection, so both workers answer some
MIN_ASKS, MAX_ASKS = 6, 200
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# What the database knows: every worker must report exactly the same values.
DATABASE_FAMILIES = ("mintca_certificates_", "mintca_crl_number", "mintca_crl_size_bytes")


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left over by an earlier run")
    return directory


@pytest.fixture
def two_workers(
    initialised_settings: Settings, tmp_path: Path, metrics_dir: Path
) -> Iterator[LiveServer]:
    process, server = start_server(
        initialised_settings,
        tmp_path / "serve.log",
        workers=WORKERS,
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    try:
        yield server
    finally:
        stop_server(process)


def scrape(server: LiveServer) -> Samples:
    """One scrape on a fresh connection (no keep-alive: the kernel picks the worker)."""
    response = httpx.get(f"{server.public_url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def database_view(samples: Samples) -> Samples:
    return {key: v for key, v in samples.items() if key[0].startswith(DATABASE_FAMILIES)}


def agreed_scrape(server: LiveServer) -> Samples:
    """Scrape SCRAPES times; the database totals must be identical in every answer."""
    scrapes = [scrape(server) for _ in range(SCRAPES)]
    views = [database_view(s) for s in scrapes]
    assert all(view == views[0] for view in views), views
    return scrapes[-1]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def csr_pem(name: str, key: ec.EllipticCurvePrivateKey) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def enroll(
    server: LiveServer, name: str, key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[x509.Certificate, x509.Certificate]:
    with server.admin_client() as admin:
        created = admin.post("/admin/tokens", json={"names": [name]})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = {"csr": csr_pem(name, key or ec.generate_private_key(ec.SECP256R1()))}
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    issued = httpx.post(f"{server.public_url}/v1/certificates", json=body, headers=headers)
    assert issued.status_code == 201, issued.text
    certificate = x509.load_pem_x509_certificate(issued.json()["certificate"].encode())
    issuer = x509.load_pem_x509_certificate(issued.json()["chain"][0].encode())
    return certificate, issuer


def ask_ocsp(server: LiveServer, cert: x509.Certificate, issuer: x509.Certificate) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    response = httpx.post(
        f"{server.public_url}/ocsp",
        content=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert response.status_code == 200, response.text
    return ocsp.load_der_ocsp_response(response.content).certificate_status.name.lower()


def counting_pids(metrics_dir: Path) -> set[str]:
    """Worker processes that have counted something (prometheus-client's `counter_<pid>.db`)."""
    names = (re.match(r"counter_(\d+)\.db$", p.name) for p in metrics_dir.iterdir())
    return {match[1] for match in names if match}


def test_totals_agree_across_workers_and_move(two_workers: LiveServer, metrics_dir: Path) -> None:
    server = two_workers
    assert not (metrics_dir / "counter_999999.db").exists(), "an earlier run's values stayed"
    before = agreed_scrape(server)

    cert, issuer = enroll(server, "metrics.internal")
    serial = format(cert.serial_number, "x")
    with server.admin_client() as admin:
        ca_id = admin.get(f"/admin/certificates/{serial}").json()["ca_id"]
    # Ask on new connections until both workers have answered OCSP (the kernel picks one per
    # connection), so the total below must be a sum over two processes.
    statuses = [ask_ocsp(server, cert, issuer) for _ in range(MIN_ASKS)]
    while len(counting_pids(metrics_dir)) < WORKERS and len(statuses) < MAX_ASKS:
        statuses.append(ask_ocsp(server, cert, issuer))
    good_asks = len(statuses)
    assert len(counting_pids(metrics_dir)) == WORKERS, sorted(metrics_dir.iterdir())
    after_enroll = agreed_scrape(server)

    with server.admin_client() as admin:
        revoked = admin.post(f"/admin/certificates/{serial}/revoke", json={"reason": "superseded"})
    assert revoked.status_code == 200, revoked.text
    statuses.append(ask_ocsp(server, cert, issuer))
    after_revoke = agreed_scrape(server)

    assert statuses == ["good"] * good_asks + ["revoked"], statuses
    key = {"ca_id": ca_id, "profile": "peer"}
    issued, revoked_now = "mintca_certificates_issued_total", "mintca_certificates_revoked"
    assert value(after_enroll, issued, **key) == value(before, issued, **key) + 1
    assert value(after_revoke, revoked_now, **key) == value(before, revoked_now, **key) + 1
    number = "mintca_crl_number"
    assert value(after_revoke, number, ca_id=ca_id) > value(after_enroll, number, ca_id=ca_id)
    # OCSP answers are per-process events: the sum over both workers is what was sent.
    answers = "mintca_ocsp_responses_total"
    good = value(after_enroll, answers, status="good") - value(before, answers, status="good")
    assert good == good_asks, after_enroll
    assert value(after_revoke, answers, status="revoked") == 1
    latency = {"listener": "public", "method": "GET", "route": "/metrics", "status": "200"}
    assert value(after_revoke, "mintca_http_request_duration_seconds_count", **latency) >= (
        3 * SCRAPES - 1
    )


def test_renewal_moves_the_issued_and_renewed_totals(
    two_workers: LiveServer, tmp_path: Path
) -> None:
    server = two_workers
    key = ec.generate_private_key(ec.SECP256R1())
    cert, _ = enroll(server, "renewing.internal", key)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with server.admin_client() as admin:
        ca_id = admin.get(f"/admin/certificates/{format(cert.serial_number, 'x')}").json()["ca_id"]
    before = agreed_scrape(server)

    new_key = ec.generate_private_key(ec.SECP256R1())
    with server.mtls_client(cert_path, key_path) as client:
        renewed = client.post("/v1/renew", json={"csr": csr_pem("renewing.internal", new_key)})
    assert renewed.status_code == 201, renewed.text
    after = agreed_scrape(server)

    key_labels = {"ca_id": ca_id, "profile": "peer"}
    for name in ("mintca_certificates_issued_total", "mintca_certificates_renewed_total"):
        assert value(after, name, **key_labels) == value(before, name, **key_labels) + 1, name
