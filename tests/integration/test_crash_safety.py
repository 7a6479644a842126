"""Crash safety: `kill -9` a serving MintCA (two workers and their parent, all at once) in
the middle of concurrent enrollments and revocations, restart it on the same data dir and
database, then check what clients were told against what survived:

- every certificate a client received (201) is in the database, byte for byte;
- no serial appears twice;
- CRL numbers keep increasing: the next CRL's number is strictly greater than any seen
  before the crash, and the `crls` table never reuses a number;
- every revocation answered 200 is on the next CRL and answered `revoked` by OCSP, and so is
  every revocation the database holds (an unanswered one may have committed: it must then be
  published too).

On SQLite (always) and on PostgreSQL (when MINTCA_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import text

from app.ca.keys import encode_kek, generate_kek
from app.clock import FixedClock
from app.config import Settings
from app.db.engine import Database
from app.services.setup import InitOptions, initialise
from tests.conftest import TEST_DATABASE_URL_ENV, make_settings, now_utc
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.slow]

WORKERS = 2
ENROLLERS = 4
REVOKERS = 2
TARGETS = 60  # certificates enrolled up front, for the revokers
# The crash comes once this much has been answered, or after LOAD_SECONDS at most.
ENOUGH_ENROLLED = 30
ENOUGH_REVOKED = 8
LOAD_SECONDS = 30
REQUEST_TIMEOUT = 30
RATE_LIMITED_PAUSE_SECONDS = 0.2


@dataclass
class Seen:
    """What the clients were told before the crash."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    enrolled: dict[str, bytes] = field(default_factory=dict)  # serial -> DER received
    revoked: set[str] = field(default_factory=set)  # answered 200
    crl_numbers: list[int] = field(default_factory=list)
    unanswered: int = 0  # requests cut off by the crash
    rate_limited: int = 0
    unexpected: list[str] = field(default_factory=list)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# --- The server and its crash ---------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the workers, multiprocessing's helpers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def crash(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL the server's whole process tree, children first so none outlives the parent
    and keeps serving. Returns how many processes were killed."""
    victims = [*descendants(process.pid), process.pid]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):  # it may have died with its parent
            os.kill(victim, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{v}").exists() for v in victims):
        time.sleep(0.05)
    return len(victims)


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """An initialised CA on the given database: SQLite always (a file of this test's own,
    whatever the suite's database), PostgreSQL through the suite's database per test."""
    if request.param == "postgresql":
        if not os.environ.get(TEST_DATABASE_URL_ENV):
            pytest.skip(f"needs PostgreSQL: set {TEST_DATABASE_URL_ENV}")
        yield request.getfixturevalue("initialised_settings")
        return
    data_dir = tmp_path / "data"
    settings = make_settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{tmp_path / 'crash.db'}",
        kek=encode_kek(generate_kek()),
    )
    initialise(settings, InitOptions(), FixedClock(now_utc()))
    yield settings


# --- The load -------------------------------------------------------------------------------------


def enroll_until_crash(server: LiveServer, token: str, stop: threading.Event, seen: Seen) -> None:
    with server.public_client() as public:
        public.timeout = httpx.Timeout(REQUEST_TIMEOUT)
        number = 0
        while not stop.is_set():
            number += 1
            name = f"e{threading.get_ident()}-{number}.crash.internal"
            body = {"csr": csr_pem(name)}
            try:
                answer = public.post(
                    "/v1/certificates", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError:
                with seen.lock:
                    seen.unanswered += 1
                return
            with seen.lock:
                if answer.status_code == 201:
                    certificate = x509.load_pem_x509_certificate(
                        answer.json()["certificate"].encode()
                    )
                    seen.enrolled[answer.json()["serial"]] = certificate.public_bytes(Encoding.DER)
                elif answer.status_code == 429:  # a rate limit may pace the load: fine
                    seen.rate_limited += 1
                else:
                    seen.unexpected.append(f"enroll {answer.status_code}: {answer.text[:200]}")
            if answer.status_code == 429:
                time.sleep(RATE_LIMITED_PAUSE_SECONDS)


def revoke_until_crash(
    server: LiveServer, ca_id: str, targets: queue.Queue[str], stop: threading.Event, seen: Seen
) -> None:
    with server.admin_client() as admin, server.public_client() as public:
        while not stop.is_set():
            try:
                serial = targets.get_nowait()
            except queue.Empty:
                return
            try:
                answer = admin.post(
                    f"/admin/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
                )
                if answer.status_code != 200:
                    with seen.lock:
                        seen.unexpected.append(f"revoke {answer.status_code}: {answer.text}")
                    continue
                with seen.lock:
                    seen.revoked.add(serial)
                fetched = public.get(f"/crl/{ca_id}.crl")
            except httpx.TransportError:
                with seen.lock:
                    seen.unanswered += 1
                return
            if fetched.status_code == 200:
                with seen.lock:
                    seen.crl_numbers.append(crl_number(x509.load_der_x509_crl(fetched.content)))


def enroll_targets(server: LiveServer, token: str) -> dict[str, x509.Certificate]:
    targets = {}
    with server.public_client() as public:
        for number in range(TARGETS):
            answer = public.post(
                "/v1/certificates",
                json={"csr": csr_pem(f"t{number}.crash.internal")},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text
            targets[answer.json()["serial"]] = x509.load_pem_x509_certificate(
                answer.json()["certificate"].encode()
            )
    return targets


def load_then_crash(
    server: LiveServer, process: subprocess.Popen[bytes], token: str, ca_id: str, targets: list[str]
) -> tuple[Seen, int]:
    seen, stop = Seen(), threading.Event()
    pending: queue.Queue[str] = queue.Queue()
    for serial in targets:
        pending.put(serial)
    threads = [
        threading.Thread(target=enroll_until_crash, args=(server, token, stop, seen))
        for _ in range(ENROLLERS)
    ] + [
        threading.Thread(target=revoke_until_crash, args=(server, ca_id, pending, stop, seen))
        for _ in range(REVOKERS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + LOAD_SECONDS
    while time.monotonic() < deadline:
        with seen.lock:
            if len(seen.enrolled) >= ENOUGH_ENROLLED and len(seen.revoked) >= ENOUGH_REVOKED:
                break
        time.sleep(0.02)
    killed = crash(process)  # the load is still running: requests are in flight
    stop.set()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT + 10)
        assert not thread.is_alive(), "a load thread did not stop after the crash"
    return seen, killed


# --- After the restart ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    certificates: dict[str, bytes]  # serial -> DER
    duplicate_serials: list[str]
    revoked: set[str]
    crl_numbers: list[int]  # full CRLs, in the order they were stored


def read_database(settings: Settings, ca_id: str) -> Stored:
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            rows = session.execute(text("SELECT serial, der, revoked_at FROM certificates")).all()
            duplicates = session.execute(
                text("SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1")
            ).all()
            numbers = session.execute(
                text("SELECT number FROM crls WHERE ca_id = :ca AND is_delta = :delta ORDER BY id"),
                {"ca": ca_id, "delta": False},
            ).all()
    finally:
        db.dispose()
    return Stored(
        certificates={row.serial: bytes(row.der) for row in rows},
        duplicate_serials=[row.serial for row in duplicates],
        revoked={row.serial for row in rows if row.revoked_at is not None},
        crl_numbers=[int(row.number) for row in numbers],
    )


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


def test_kill_9_under_load_loses_nothing_it_answered(
    crash_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(crash_settings, tmp_path / "serve-1.log", workers=WORKERS)
    try:
        with server.admin_client() as admin:
            made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 5000})
            assert made.status_code == 201, made.text
            ca_id = next(ca["ca_id"] for ca in admin.get("/admin/cas").json() if ca["active"])
        token = made.json()["token"]
        targets = enroll_targets(server, token)
        with server.public_client() as public:
            issuer = x509.load_der_x509_certificate(public.get(f"/ca/{ca_id}.crt").content)
        # One target stays out of the load, for the revocation after the restart: with
        # revocations fast, the revokers can use up every other one before the crash.
        spare, *revoked_under_load = targets
        seen, killed = load_then_crash(server, process, token, ca_id, revoked_under_load)
    finally:
        stop_server(process)  # already dead unless the test failed before the crash

    process, server = start_server(crash_settings, tmp_path / "serve-2.log", workers=WORKERS)
    try:
        stored_at_restart = read_database(crash_settings, ca_id)
        with server.public_client() as public, server.admin_client() as admin:
            served = public.get(f"/crl/{ca_id}.crl")
            assert served.status_code == 200, served.text
            crl_at_restart = x509.load_der_x509_crl(served.content)
            # One more revocation after the restart: the next CRL.
            assert spare not in stored_at_restart.revoked
            again = admin.post(f"/admin/certificates/{spare}/revoke", json={"reason": "superseded"})
            assert again.status_code == 200, again.text
            next_crl = x509.load_der_x509_crl(public.get(f"/crl/{ca_id}.crl").content)
            shown = {serial: admin.get(f"/admin/certificates/{serial}") for serial in seen.enrolled}
            ocsp_answers = {
                serial: ocsp_status(public, targets[serial], issuer)
                for serial in sorted(stored_at_restart.revoked & set(targets))
            }
        stored = read_database(crash_settings, ca_id)
    finally:
        stop_server(process)

    before = max([*seen.crl_numbers, 0])
    on_next_crl = {format(entry.serial_number, "x") for entry in next_crl}
    on_crl_at_restart = {format(entry.serial_number, "x") for entry in crl_at_restart}
    print(
        f"\ncrash ({crash_settings.effective_database_url.split(':')[0]}): killed {killed} "
        f"processes with {len(seen.enrolled)} enrollments and {len(seen.revoked)} revocations "
        f"answered, {seen.unanswered} requests cut off; after restart: "
        f"{len(seen.enrolled)} received certificates checked in the database, "
        f"{len(stored.certificates)} rows, {len(stored_at_restart.revoked)} revoked in the "
        f"database checked on the CRL and in OCSP; CRL numbers: {before} seen before the crash, "
        f"{crl_number(crl_at_restart)} at restart, {crl_number(next_crl)} next"
    )
    assert not seen.unexpected, seen.unexpected
    assert len(seen.enrolled) >= 1, "no enrollment was answered before the crash"
    assert len(seen.revoked) >= 1, "no revocation was answered before the crash"

    # Every certificate a client received is stored, byte for byte, and listed by the API.
    missing = [s for s in seen.enrolled if s not in stored.certificates]
    assert not missing, f"certificates answered 201 but lost: {missing}"
    changed = [s for s, der in seen.enrolled.items() if stored.certificates[s] != der]
    assert not changed, f"stored DER differs from what the client got: {changed}"
    not_listed = {s: a.status_code for s, a in shown.items() if a.status_code != 200}
    assert not not_listed, not_listed

    # No serial twice, in the table or among the answers.
    assert not stored.duplicate_serials, stored.duplicate_serials

    # CRL numbers: never reused, never going back, and the next is above all seen before.
    assert len(set(stored.crl_numbers)) == len(stored.crl_numbers), stored.crl_numbers
    assert stored.crl_numbers == sorted(stored.crl_numbers), stored.crl_numbers
    assert crl_number(crl_at_restart) >= before, (crl_number(crl_at_restart), before)
    assert crl_number(next_crl) > max(before, *stored_at_restart.crl_numbers), (
        crl_number(next_crl),
        before,
        stored_at_restart.crl_numbers,
    )

    # Every revocation answered 200 was committed, is on the CRL served at restart and on
    # the next one, and OCSP says revoked; so is any revocation committed without an answer.
    assert seen.revoked <= stored_at_restart.revoked, seen.revoked - stored_at_restart.revoked
    assert stored_at_restart.revoked <= on_crl_at_restart, (
        stored_at_restart.revoked - on_crl_at_restart
    )
    assert stored_at_restart.revoked | {spare} <= on_next_crl
    not_revoked = {s: status for s, status in ocsp_answers.items() if status != "REVOKED"}
    assert not not_revoked, not_revoked
