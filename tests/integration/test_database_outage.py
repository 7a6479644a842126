"""A PostgreSQL outage under load, on a throwaway cluster of the test's own (pg_cluster.py):

- while the database is down, `/ready` answers 503 and the API answers 503 problem documents
  that show no traceback or driver message; the log carries no traceback per request;
- what needs no database keeps answering (`/health`, CA certificates);
- pre-signed OCSP answers keep being served while valid;
- when the database returns, everything recovers without restarting MintCA.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from app.ca.keys import encode_kek, generate_kek
from app.clock import FixedClock
from app.config import Settings
from app.services.setup import InitOptions, initialise
from tests.conftest import make_settings, now_utc
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server
from tests.integration.pg_cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBLEM_JSON = "application/problem+json"
SETTLE_SECONDS = 60  # for /ready to notice the outage, and the recovery
REQUEST_TIMEOUT = 20
LOAD_THREADS = 3
# What must never appear in an answer: a traceback, exception or driver names.
LEAKS = ("Traceback", "sqlalchemy", "psycopg", "OperationalError", 'File "')


@dataclass
class Outage:
    cluster: Cluster
    settings: Settings


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    cluster = Cluster()
    try:
        cluster.start()
        cluster.create_database()
        settings = make_settings(
            data_dir=tmp_path / "data", database_url=cluster.url, kek=encode_kek(generate_kek())
        )
        initialise(settings, InitOptions(), FixedClock(now_utc()))
        yield Outage(cluster, settings)
    finally:
        cluster.destroy()


@dataclass(frozen=True)
class Enrolled:
    serial: str
    certificate: x509.Certificate
    issuer: x509.Certificate


def enroll(public: httpx.Client, token: str, name: str) -> httpx.Response:
    return public.post(
        "/v1/certificates",
        json={"csr": csr_pem(name)},
        headers={"Authorization": f"Bearer {token}"},
    )


def enrolled(answer: httpx.Response) -> Enrolled:
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return Enrolled(
        body["serial"],
        x509.load_pem_x509_certificate(body["certificate"].encode()),
        x509.load_pem_x509_certificate(body["chain"][0].encode()),
    )


def ca_id(issued: Enrolled) -> str:
    """The issuing CA's id: the hex of its subject key identifier (README: Identifiers)."""
    identifier = issued.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return identifier.value.digest.hex()


def ocsp_der(issued: Enrolled) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        issued.certificate, issued.issuer, hashes.SHA1()
    )
    return builder.build().public_bytes(Encoding.DER)


def ocsp_outcome(answer: httpx.Response) -> str:
    """SUCCESSFUL/GOOD-style text of an OCSP answer, or the HTTP status when it is none."""
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}"
    response = ocsp.load_der_ocsp_response(answer.content)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status.name
    return response.certificate_status.name


def wait_for_ready(public: httpx.Client, status: int) -> float:
    """Seconds until /ready answers `status` (fails after SETTLE_SECONDS)."""
    began = time.monotonic()
    last = None
    while time.monotonic() - began < SETTLE_SECONDS:
        try:
            last = public.get("/ready")
            if last.status_code == status:
                return time.monotonic() - began
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"/ready did not answer {status} within {SETTLE_SECONDS} s: {last!r}")


def check_problem(answer: httpx.Response, status: int, what: str) -> None:
    assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
    assert answer.headers["content-type"].startswith(PROBLEM_JSON), f"{what}: {answer.headers}"
    body = answer.json()
    assert body["status"] == status, f"{what}: {body}"
    assert {"type", "title", "detail"} <= body.keys(), f"{what}: {body}"
    leaked = [word for word in LEAKS if word in answer.text]
    assert not leaked, f"{what} shows {leaked}: {answer.text}"


def count_tracebacks(log: str) -> tuple[int, int]:
    """(tracebacks logged by MintCA or uvicorn, tracebacks SQLAlchemy's pool logs once per
    dead connection it closes or resets)."""
    lines = log.splitlines()
    ours = pool = 0
    for before, line in zip(["", *lines], lines, strict=False):
        if line.startswith("Traceback"):
            if "sqlalchemy.pool" in before:
                pool += 1
            else:
                ours += 1
    return ours, pool


@dataclass
class Load:
    """Enrollments and status reads from several threads through the whole outage."""

    server: LiveServer
    token: str
    serial: str
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        with self.server.public_client() as public:
            public.timeout = httpx.Timeout(REQUEST_TIMEOUT)
            number = 0
            while not self.stop.is_set():
                number += 1
                name = f"l{index}-{number}.internal"
                self.record("enroll", partial(enroll, public, self.token, name))
                self.record("status", partial(public.get, f"/v1/certificates/{self.serial}/status"))
                time.sleep(0.01)

    def record(self, what: str, send: Callable[[], httpx.Response]) -> None:
        try:
            answer = send()
        except httpx.TransportError as exc:
            with self.lock:
                self.bad.append(f"{what}: no answer ({exc!r})")
            return
        with self.lock:
            self.statuses[f"{what} {answer.status_code}"] += 1
            if answer.status_code >= 500 and answer.status_code != 503:
                self.bad.append(f"{what}: {answer.status_code} {answer.text[:200]}")
            if any(word in answer.text for word in LEAKS):
                self.bad.append(f"{what}: leaks {answer.text[:300]}")


def test_postgresql_outage_under_load(outage: Outage, tmp_path: Path) -> None:
    process, server = start_server(outage.settings, tmp_path / "serve.log", workers=2)
    try:
        with server.admin_client() as admin, server.public_client() as public:
            made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 5000})
            assert made.status_code == 201, made.text
            token = made.json()["token"]
            first = enrolled(enroll(public, token, "before.internal"))
            load = Load(server, token, first.serial)
            threads = [threading.Thread(target=load.run, args=(n,)) for n in range(LOAD_THREADS)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1)  # load against a healthy database first
                log_before_outage = len(server.log())
                outage.cluster.stop()
                noticed = wait_for_ready(public, 503)
                check_problem(public.get("/ready"), 503, "/ready")
                check_problem(enroll(public, token, "during.internal"), 503, "enrollment")
                check_problem(public.get(f"/v1/certificates/{first.serial}/status"), 503, "status")
                check_problem(admin.get("/admin/certificates"), 503, "admin list (mtls)")
                crl = public.get(f"/crl/{ca_id(first)}.crl")
                if crl.status_code != 200:  # a CRL kept in memory may still be served
                    check_problem(crl, 503, "CRL")
                health = public.get("/health")
                root = public.get("/ca/root.pem")
                time.sleep(2)  # the load keeps hitting the dead database
                outage_log = server.log()[log_before_outage:]

                outage.cluster.start()
                recovered = wait_for_ready(public, 200)
                after = enrolled(enroll(public, token, "after.internal"))
                status_after = public.get(f"/v1/certificates/{first.serial}/status")
                listed = admin.get("/admin/certificates", params={"limit": 5})
                revoked = admin.post(
                    f"/admin/certificates/{after.serial}/revoke", json={"reason": "superseded"}
                )
                ocsp_after = ocsp_outcome(
                    public.post(
                        "/ocsp",
                        content=ocsp_der(after),
                        headers={"Content-Type": "application/ocsp-request"},
                    )
                )
                time.sleep(1)  # the load runs against the recovered database too
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join(timeout=REQUEST_TIMEOUT + 10)
        still_running = process.poll() is None
    finally:
        stop_server(process)

    tracebacks, from_pool = count_tracebacks(outage_log)
    print(
        f"\noutage: /ready 503 after {noticed:.1f} s, 200 again {recovered:.1f} s after the "
        f"database returned; load answers {dict(sorted(load.statuses.items()))}; "
        f"{tracebacks} tracebacks (and {from_pool} from SQLAlchemy's pool dropping dead "
        f"connections) in {len(outage_log.splitlines())} log lines during the outage"
    )
    assert still_running, "MintCA exited during the outage"
    assert health.status_code == 200, health.text
    assert root.status_code == 200, root.text
    assert not load.bad, load.bad[:20]
    assert load.statuses["enroll 503"] > 0, load.statuses
    assert load.statuses["enroll 201"] > 0, load.statuses
    # No traceback per failed request (the pool's own, one per dead connection, are its
    # business and bounded by its size).
    assert tracebacks <= 2, outage_log[-6000:]
    assert status_after.status_code == 200, status_after.text
    assert listed.status_code == 200, listed.text
    assert revoked.status_code == 200, revoked.text
    assert ocsp_after == "REVOKED", ocsp_after


def test_presigned_ocsp_answers_served_during_outage(outage: Outage, tmp_path: Path) -> None:
    process, server = start_server(outage.settings, tmp_path / "serve.log", workers=1)
    try:
        with server.admin_client() as admin, server.public_client() as public:
            made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 5})
            assert made.status_code == 201, made.text
            issued = enrolled(enroll(public, made.json()["token"], "ocsp.internal"))
            request = ocsp_der(issued)
            post = {"content": request, "headers": {"Content-Type": "application/ocsp-request"}}
            get_path = "/ocsp/" + base64.b64encode(request).decode()
            # Pre-signed (no nonce) answers, fetched once so they are cached.
            before = (
                ocsp_outcome(public.post("/ocsp", **post)),
                ocsp_outcome(public.get(get_path)),
            )
            assert before == ("GOOD", "GOOD"), before

            outage.cluster.stop()
            wait_for_ready(public, 503)
            during = [
                (ocsp_outcome(public.post("/ocsp", **post)), ocsp_outcome(public.get(get_path)))
                for _ in range(3)
            ]
    finally:
        stop_server(process)
    assert during == [("GOOD", "GOOD")] * 3, during
