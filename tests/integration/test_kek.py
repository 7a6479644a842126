"""The KEK and a real `mintca serve`: a wrong or missing KEK stops it with one line and exit
code 2; `mintca kek rotate` while two workers answer enrollments and OCSP fails no request,
and after a restart with the new KEK alone everything works and the old KEK unwraps nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import select

from app.ca.keys import encode_kek, generate_kek, kek_id, parse_kek, unwrap_private_key
from app.config import Settings
from app.db.engine import Database
from app.db.models import CARecord, ResponderRecord
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, free_port, start_server, stop_server

pytestmark = pytest.mark.integration

PROCESS_TIMEOUT = 60  # seconds for any one `mintca` run
LOAD_SECONDS = 60  # the load threads stop by themselves after this, whatever happens
AFTER_ROTATION = 8  # enrollments (and as many OCSP rounds) required after the rotation


def serve(settings: Settings, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env={
            **os.environ,
            "MINTCA_DATA_DIR": str(settings.data_dir),
            "MINTCA_DATABASE_URL": settings.effective_database_url,
            "MINTCA_PUBLIC_BIND": f"127.0.0.1:{free_port()}",
            "MINTCA_MTLS_BIND": f"127.0.0.1:{free_port()}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"MINTCA_KEK": encode_kek(generate_kek())},
            r"^error: cannot decrypt the key of [0-9a-f]+: it is wrapped under KEK [0-9a-f]{16}, "
            r"and this process has KEK [0-9a-f]{16}; is MINTCA_KEK the one used at init\?$",
            id="wrong KEK",
        ),
        pytest.param(
            {"MINTCA_KEK": ""},
            r"^error: no KEK: set MINTCA_KEK or provide .*/kek$",
            id="missing KEK",
        ),
        pytest.param(
            {"MINTCA_KEK": "not-base64!"},
            r"^error: MINTCA_KEK / .*: the KEK must be base64 of 32 random bytes$",
            id="malformed KEK",
        ),
        pytest.param(
            {"MINTCA_KEK": encode_kek(generate_kek()), "MINTCA_WORKERS": "2"},
            r"^error: cannot decrypt the key of [0-9a-f]+: ",
            id="wrong KEK, 2 workers",
        ),
    ],
)
def test_a_wrong_or_missing_kek_stops_serve_with_one_line(
    initialised_settings: Settings, env: dict[str, str], message: str
) -> None:
    result = serve(initialised_settings, env)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(message, lines[0]), lines[0]
    assert result.stdout == ""


# --- Rotation under load ---------------------------------------------------------------------


@dataclass
class Load:
    """Enrollments and OCSP requests from two threads, each outcome kept."""

    server: LiveServer
    token: str
    leaf: x509.Certificate
    issuing: x509.Certificate
    root: x509.Certificate
    rotated: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    enrolled_after: int = 0
    ocsp_after: int = 0

    def enroll_forever(self) -> None:
        with httpx.Client(base_url=self.server.public_url, timeout=30) as client:
            while not self.stop.wait(0.05):
                after = self.rotated.is_set()
                name = f"{uuid.uuid4().hex[:10]}.load.internal"
                response = client.post(
                    "/v1/certificates",
                    json={"csr": csr_pem(name)},
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                if response.status_code != 201:
                    self.failures.append(f"enroll {response.status_code}: {response.text}")
                elif after:
                    self.enrolled_after += 1

    def ocsp_forever(self) -> None:
        with httpx.Client(base_url=self.server.public_url, timeout=30) as client:
            while not self.stop.wait(0.05):
                after = self.rotated.is_set()
                # The root's responder is first needed after the rotation: the workers issue
                # or load it then, wrapped under the new KEK.
                pairs = [(self.leaf, self.issuing)] + ([(self.issuing, self.root)] if after else [])
                for certificate, issuer in pairs:
                    self.ask(client, certificate, issuer)
                if after:
                    self.ocsp_after += 1

    def ask(
        self, client: httpx.Client, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> None:
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        response = client.post(
            "/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"}
        )
        status = ocsp.load_der_ocsp_response(response.content).response_status
        if response.status_code != 200 or status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            self.failures.append(
                f"OCSP {response.status_code} {status.name} for {certificate.subject}"
            )


@pytest.fixture
def file_kek_settings(initialised_settings: Settings) -> Settings:
    assert initialised_settings.kek
    path = initialised_settings.data_dir / "kek"
    path.write_text(initialised_settings.kek + "\n")
    path.chmod(0o600)
    return initialised_settings.model_copy(update={"kek": None})


@pytest.fixture
def two_workers(file_kek_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(file_kek_settings, tmp_path / "serve.log", workers=2)
    try:
        yield server
    finally:
        stop_server(process)


def prepare_load(server: LiveServer) -> Load:
    with server.admin_client() as admin:
        created = admin.post("/admin/tokens", json={"names": ["*.load.internal"], "max_uses": 1000})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    with httpx.Client(base_url=server.public_url, timeout=30) as client:
        first = client.post(
            "/v1/certificates",
            json={"csr": csr_pem("first.load.internal")},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert first.status_code == 201, first.text
    leaf = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    issuing, root = x509.load_pem_x509_certificates("".join(first.json()["chain"]).encode())
    return Load(server, token, leaf, issuing, root)


def all_blobs(settings: Settings) -> dict[str, bytes]:
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            cas = {c.id: c.key_wrapped for c in session.scalars(select(CARecord))}
            responders = {
                f"ocsp:{r.serial}": r.key_wrapped for r in session.scalars(select(ResponderRecord))
            }
    finally:
        db.dispose()
    return {**cas, **responders}


@pytest.mark.slow
def test_kek_rotate_under_load_fails_no_request_and_the_old_kek_unwraps_nothing(
    file_kek_settings: Settings, two_workers: LiveServer, tmp_path: Path
) -> None:
    old_kek = parse_kek((file_kek_settings.data_dir / "kek").read_text())
    load = prepare_load(two_workers)
    threads = [
        threading.Thread(target=load.enroll_forever),
        threading.Thread(target=load.ocsp_forever),
    ]
    for thread in threads:
        thread.start()
    watchdog = threading.Timer(LOAD_SECONDS, load.stop.set)
    watchdog.start()
    try:
        rotation = subprocess.run(
            [sys.executable, "-m", "app.cli", "kek", "rotate"],
            env={
                **os.environ,
                "MINTCA_DATA_DIR": str(file_kek_settings.data_dir),
                "MINTCA_DATABASE_URL": file_kek_settings.effective_database_url,
            },
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        load.rotated.set()
        while not load.stop.wait(0.1):
            if min(load.enrolled_after, load.ocsp_after) >= AFTER_ROTATION:
                break
    finally:
        load.stop.set()
        watchdog.cancel()
        for thread in threads:
            thread.join(timeout=PROCESS_TIMEOUT)

    assert rotation.returncode == 0, rotation.stderr
    assert load.failures == [], (load.failures[:5], two_workers.log()[-6000:])
    assert min(load.enrolled_after, load.ocsp_after) >= AFTER_ROTATION, (
        load.enrolled_after,
        load.ocsp_after,
        two_workers.log(),
    )
    new_kek = parse_kek((file_kek_settings.data_dir / "kek").read_text())
    blobs = all_blobs(file_kek_settings)
    assert sum(1 for label in blobs if label.startswith("ocsp:")) >= 2, "both CAs' responders"
    for label, blob in blobs.items():
        with pytest.raises(ValueError, match="cannot decrypt"):
            unwrap_private_key(blob, kek=old_kek, label=label)
        unwrap_private_key(blob, kek=new_kek, label=label)
    assert f"under KEK {kek_id(new_kek)}" in rotation.stdout


@pytest.mark.slow
def test_after_a_restart_with_the_new_kek_alone_everything_works(
    file_kek_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(file_kek_settings, tmp_path / "before.log")
    try:
        load = prepare_load(server)
    finally:
        stop_server(process)
    rotation = subprocess.run(
        [sys.executable, "-m", "app.cli", "kek", "rotate"],
        env={
            **os.environ,
            "MINTCA_DATA_DIR": str(file_kek_settings.data_dir),
            "MINTCA_DATABASE_URL": file_kek_settings.effective_database_url,
        },
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert rotation.returncode == 0, rotation.stderr
    new_kek = (file_kek_settings.data_dir / "kek").read_text().strip()
    (file_kek_settings.data_dir / "kek").unlink()  # the new KEK only, and only from the env
    settings = file_kek_settings.model_copy(update={"kek": new_kek})

    process, server = start_server(settings, tmp_path / "after.log")
    try:
        load.server = server
        load.rotated.set()
        with httpx.Client(base_url=server.public_url, timeout=30) as client:
            load.ask(client, load.leaf, load.issuing)
            load.ask(client, load.issuing, load.root)
        with server.admin_client() as admin:
            cas = admin.get("/admin/cas")
        enrolled = httpx.post(
            f"{server.public_url}/v1/certificates",
            json={"csr": csr_pem("after.load.internal")},
            headers={"Authorization": f"Bearer {load.token}"},
            timeout=30,
        )
    finally:
        stop_server(process)

    assert load.failures == []
    assert enrolled.status_code == 201, enrolled.text
    assert cas.status_code == 200, cas.text
