"""CA rotation and server certificate renewal on a real `mintca serve` with 2 workers, over
real sockets: `mintca ca rotate` and `mintca ca list` as an operator runs them; enrollments and
`/ca/chain.pem` on fresh connections (so both workers answer) use the new CA at once; the old
CA's certificates keep OCSP and CRL answers, and its admin certificate keeps the mtls listener;
the new CA's certificates get in at once; `openssl verify -crl_check_all` accepts both CAs'
leaves with the published CRLs; a due server certificate is renewed and served without a
restart."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from app.ca.issuance import Endpoints, pem_bundle
from app.ca.keys import generate_private_key, private_key_pem
from app.ca.profiles import PROFILES
from app.clock import FixedClock
from app.config import Settings
from app.files import write_file
from app.services.certificates import sign_leaf
from app.services.container import Services
from app.services.server_cert import CERT_FILE, KEY_FILE, LOCK_FILE, names_of
from app.services.setup import InitReport
from tests.conftest import now_utc
from tests.helpers import make_csr
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2
FRESH_CONNECTIONS = 8  # new TCP connections per check, so that both workers answer some
PROCESS_TIMEOUT = 60
OPENSSL = "/usr/bin/openssl"
# How long a worker may take to notice a change another process made (it looks every second).
CONVERGENCE_SECONDS = 15


@pytest.fixture
def server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, live = start_server(initialised_settings, tmp_path / "serve.log", workers=WORKERS)
    try:
        yield live
    finally:
        stop_server(process)


@dataclass(frozen=True)
class Bundle:
    leaf: x509.Certificate
    cert_path: Path  # the leaf alone
    chain_path: Path  # the leaf, then its issuing CA
    key_path: Path


def mintca(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--url", server.mtls_url],
        env={**os.environ, "MINTCA_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def enroll(server: LiveServer, directory: Path, *, profile: str = "server") -> Bundle:
    """A token from the admin API and an enrollment on the public listener, each on a fresh
    connection; the files a client would keep."""
    name = f"{uuid.uuid4().hex[:10]}.rot.internal"
    with server.admin_client() as admin:
        made = admin.post("/admin/tokens", json={"names": [name], "profile": profile})
    assert made.status_code == 201, made.text
    key, csr = make_csr(name)
    with server.public_client() as public:
        response = public.post(
            "/v1/certificates",
            json={"csr": csr.public_bytes(Encoding.PEM).decode()},
            headers={"Authorization": f"Bearer {made.json()['token']}"},
        )
    assert response.status_code == 201, response.text
    body = response.json()
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{kind}.pem" for kind in ("cert", "chain", "key")]
    paths[0].write_text(body["certificate"])
    paths[1].write_text(body["certificate"] + body["chain"][0])
    paths[2].write_bytes(private_key_pem(key))
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    return Bundle(leaf, *paths)


def active_chain(server: LiveServer) -> list[x509.Certificate]:
    response = httpx.get(f"{server.public_url}/ca/chain.pem", timeout=30)  # a fresh connection
    assert response.status_code == 200, response.text
    return x509.load_pem_x509_certificates(response.content)


def ocsp_status(server: LiveServer, leaf: x509.Certificate, issuer: x509.Certificate) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    response = httpx.post(
        f"{server.public_url}/ocsp",
        content=request.public_bytes(Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=30,
    )
    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.response_status
    return answer.certificate_status.name.lower()


def crl_pem(server: LiveServer, ca_id: str) -> bytes:
    response = httpx.get(f"{server.public_url}/crl/{ca_id}.pem", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def admin_get_status(server: LiveServer, cert: Path, key: Path) -> int | str:
    """GET /admin/cas with this bundle on a fresh connection: the status, or the TLS failure."""
    try:
        with server.mtls_client(cert, key) as client:
            return client.get("/admin/cas").status_code
    except (httpx.TransportError, ssl.SSLError) as exc:
        return f"no HTTP response: {exc!r}"


def statuses(server: LiveServer, cert: Path, key: Path) -> list[int | str]:
    return [admin_get_status(server, cert, key) for _ in range(FRESH_CONNECTIONS)]


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + CONVERGENCE_SECONDS
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_rotation_end_to_end_with_two_workers(
    server: LiveServer, initialised_report: InitReport, tmp_path: Path
) -> None:
    old_id = initialised_report.issuing_ca_id
    old_ca = active_chain(server)[0]
    old_good = enroll(server, tmp_path / "old")
    old_revoked = enroll(server, tmp_path / "old")

    rotated = mintca(server, "ca", "rotate")

    assert rotated.returncode == 0, rotated.stderr
    match = re.search(r"^rotated: issuing CA ([0-9a-f]{40}) is now active$", rotated.stdout, re.M)
    assert match, rotated.stdout
    new_id = match[1]
    listed = mintca(server, "ca", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {initialised_report.root_ca_id, old_id, new_id}, listed.stdout
    assert rows[new_id][1:3] == ["issuing", "yes"], listed.stdout
    assert rows[old_id][1] == "issuing", listed.stdout
    assert rows[old_id][2] != "yes", listed.stdout

    # /ca/chain.pem and new enrollments, on fresh connections (both workers), use the new CA.
    chains = [active_chain(server) for _ in range(FRESH_CONNECTIONS)]
    new_ca = chains[0][0]
    assert format(new_ca.serial_number, "x") != format(old_ca.serial_number, "x")
    assert all(chain[0] == new_ca for chain in chains), "a worker still serves the old chain"
    new_leaves = [enroll(server, tmp_path / "new") for _ in range(FRESH_CONNECTIONS)]
    for bundle in new_leaves:
        bundle.leaf.verify_directly_issued_by(new_ca)

    # The old CA's certificates: OCSP good, then revoked; and on the old CA's next CRL.
    number_before = x509.load_pem_x509_crl(crl_pem(server, old_id)).extensions
    assert ocsp_status(server, old_revoked.leaf, old_ca) == "good"
    with server.admin_client() as admin:
        revoked = admin.post(
            f"/admin/certificates/{old_revoked.leaf.serial_number:x}/revoke",
            json={"reason": "keyCompromise"},
        )
    assert revoked.status_code == 200, revoked.text
    assert ocsp_status(server, old_revoked.leaf, old_ca) == "revoked"
    old_crl = x509.load_pem_x509_crl(crl_pem(server, old_id))
    assert old_crl.get_revoked_certificate_by_serial_number(old_revoked.leaf.serial_number)
    assert (
        old_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        > number_before.get_extension_for_class(x509.CRLNumber).value.crl_number
    )

    # The admin certificate issued before the rotation keeps the mtls listener.
    admin_pem, admin_key = server.data_dir / "admin.pem", server.data_dir / "admin-key.pem"
    assert statuses(server, admin_pem, admin_key) == [200] * FRESH_CONNECTIONS

    # An admin certificate of the new CA gets in at once with its chain, and, once each
    # worker has seen the rotation (it looks every second), with the leaf alone.
    new_admin = enroll(server, tmp_path / "new-admin", profile="admin")
    new_admin.leaf.verify_directly_issued_by(new_ca)
    assert statuses(server, new_admin.chain_path, new_admin.key_path) == [200] * FRESH_CONNECTIONS
    assert eventually(
        lambda: (
            statuses(server, new_admin.cert_path, new_admin.key_path) == [200] * FRESH_CONNECTIONS
        )
    ), statuses(server, new_admin.cert_path, new_admin.key_path)

    # openssl verify -crl_check_all: leaves of both CAs, with the root's and both CAs' CRLs.
    root_id = initialised_report.root_ca_id
    crls = tmp_path / "crls.pem"
    crls.write_bytes(b"".join(crl_pem(server, ca) for ca in (root_id, old_id, new_id)))
    untrusted = tmp_path / "intermediates.pem"
    untrusted.write_bytes(pem_bundle(old_ca, new_ca))

    def verify(bundle: Bundle) -> str:
        completed = subprocess.run(
            [
                *(OPENSSL, "verify", "-crl_check_all", "-CAfile", str(server.root_pem)),
                *("-untrusted", str(untrusted), "-CRLfile", str(crls), str(bundle.cert_path)),
            ],
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        return f"{completed.stdout}{completed.stderr}[exit {completed.returncode}]"

    assert verify(old_good).endswith(": OK\n[exit 0]"), verify(old_good)
    assert verify(new_leaves[0]).endswith(": OK\n[exit 0]"), verify(new_leaves[0])
    refused = verify(old_revoked)
    assert "certificate revoked" in refused, refused
    assert not refused.endswith("[exit 0]"), refused


def test_ca_rotate_cli_errors(server: LiveServer, tmp_path: Path) -> None:
    bad_type = mintca(server, "ca", "rotate", "--key-type", "dsa-1024")
    peer = enroll(server, tmp_path / "peer", profile="peer")
    as_peer = mintca(
        server,
        "ca",
        "rotate",
        "--cert",
        str(peer.chain_path),
        "--key",
        str(peer.key_path),
    )
    listed = mintca(server, "ca", "list")

    assert bad_type.returncode == 2, bad_type.stderr
    assert "choose one of" in bad_type.stderr, bad_type.stderr
    assert as_peer.returncode == 1, as_peer.stderr
    assert "HTTP 403" in as_peer.stderr, as_peer.stderr
    assert "Traceback" not in as_peer.stderr, as_peer.stderr
    assert "yes" in listed.stdout
    assert len(listed.stdout.splitlines()) == 3, f"a refused rotation made a CA:\n{listed.stdout}"


# --- The server certificate renews itself ---------------------------------------------------------


@pytest.fixture
def tls_server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """2 workers, and the public listener on TLS too (MINTCA_PUBLIC_TLS): both present
    server.pem."""
    process, live = start_server(
        initialised_settings,
        tmp_path / "serve.log",
        workers=WORKERS,
        extra_env={"MINTCA_PUBLIC_TLS": "true"},
    )
    try:
        yield live
    finally:
        stop_server(process)


def presented(server: LiveServer, *, public: bool = False) -> x509.Certificate:
    """The server certificate a listener presents on a fresh connection."""
    context = server.ssl_context(server.data_dir / "admin.pem", server.data_dir / "admin-key.pem")
    port = int(server.public_url.rsplit(":", 1)[1]) if public else server.mtls_port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def write_due_server_certificate(settings: Settings, clock: FixedClock) -> x509.Certificate:
    """A server certificate with less than a third of its life left, put in place the way a
    renewal does (under the data dir's lock, key first)."""
    services = Services(settings, clock=clock)
    try:
        authority = services.keyring.active_issuer()
        current = x509.load_pem_x509_certificates((settings.data_dir / CERT_FILE).read_bytes())
        key = generate_private_key("ec-p256")
        certificate = sign_leaf(
            authority,
            public_key=key.public_key(),
            names=names_of(current[0]),
            profile=PROFILES["server"],
            validity=timedelta(days=365),
            now=clock.now() - timedelta(days=300),
            endpoints=Endpoints(settings.base_url),
        )
    finally:
        services.close()
    with open(settings.data_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_file(settings.data_dir / KEY_FILE, private_key_pem(key), 0o600)
        chain = pem_bundle(certificate, authority.certificate)
        write_file(settings.data_dir / CERT_FILE, chain, 0o644)
    return certificate


def test_a_due_server_certificate_is_renewed_and_served_without_restart(
    tls_server: LiveServer, initialised_settings: Settings
) -> None:
    server = tls_server
    original = presented(server)
    due = write_due_server_certificate(initialised_settings, FixedClock(now_utc()))

    def renewed_everywhere() -> bool:
        on_disk = x509.load_pem_x509_certificates((server.data_dir / CERT_FILE).read_bytes())[0]
        seen = {presented(server, public=p) for p in (False, True) * FRESH_CONNECTIONS}
        return seen == {on_disk} and on_disk not in (original, due)

    assert eventually(renewed_everywhere), [presented(server).serial_number for _ in range(4)]
    renewed = presented(server)
    assert renewed.not_valid_after_utc - now_utc() > timedelta(days=360)
    assert names_of(renewed) == names_of(original)
    with server.admin_client() as admin:
        stored = admin.get(f"/admin/certificates/{renewed.serial_number:x}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["profile"] == "server", stored.text
    log = server.log()
    assert "Traceback" not in log, log
