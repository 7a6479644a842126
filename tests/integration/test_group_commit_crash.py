"""Group commit loses nothing when the process dies: `mintca serve` is killed with SIGKILL while
clients enroll concurrently, and after a restart every certificate a client received a 201 for
is in the database, with its audit row and its token use spent."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings
from app.services.container import Services
from tests.helpers import csr_pem
from tests.integration.live import start_server, stop_server

pytestmark = pytest.mark.slow

CLIENTS = 8
KILL_AFTER_ISSUED = 150  # enough for many batches to have committed and more to be in flight
MAX_SECONDS = 60
MAX_USES = 5000


def make_token(settings: Settings) -> tuple[str, str]:
    services = Services(settings)
    try:
        created = services.tokens.create(
            actor="test",
            profiles=["server"],
            names=["*.crash.example.internal"],
            ttl=timedelta(hours=1),
            max_uses=MAX_USES,
            max_validity_days=None,
        )
    finally:
        services.close()
    return created.token, created.id


def enroll_until_refused(
    url: str, token: str, name: str, issued: list[str], failures: list[str]
) -> None:
    """Enroll on one keep-alive connection until the server is gone; record each 201."""
    body = {"csr": csr_pem(name), "profile": "server"}
    deadline = time.monotonic() + MAX_SECONDS
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                answer = client.post(
                    "/v1/certificates", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                failures.append(repr(exc))
                return
            if answer.status_code != 201:
                failures.append(f"{answer.status_code} {answer.text}")
                return
            issued.append(answer.json()["serial"])


def test_every_201_survives_a_kill_during_concurrent_enrollments(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    token, token_id = make_token(initialised_settings)
    process, server = start_server(initialised_settings, tmp_path / "serve.log")
    issued: list[str] = []
    failures: list[str] = []
    clients = [
        threading.Thread(
            target=enroll_until_refused,
            args=(server.public_url, token, f"c{n}.crash.example.internal", issued, failures),
        )
        for n in range(CLIENTS)
    ]
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + MAX_SECONDS
        while len(issued) < KILL_AFTER_ISSUED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not failures, failures  # every request succeeded while the server ran
        process.send_signal(signal.SIGKILL)  # no shutdown: batches in flight die with it
        process.wait(timeout=10)
        for client in clients:
            client.join(timeout=MAX_SECONDS)
    finally:
        stop_server(process)
    received = list(issued)  # every 201 any client saw
    assert len(received) >= KILL_AFTER_ISSUED, server.log()
    assert len(failures) == CLIENTS, f"not every client saw the kill: {failures}"

    process, server = start_server(initialised_settings, tmp_path / "restart.log")
    try:
        services = Services(initialised_settings)
        try:
            with services.db.read() as session:
                stored = {
                    serial
                    for (serial,) in session.execute(
                        text("SELECT serial FROM certificates WHERE token_id = :id"),
                        {"id": token_id},
                    )
                }
                audited = {
                    target
                    for (target,) in session.execute(
                        text("SELECT target FROM audit_log WHERE action = 'certificate.issue'")
                    )
                }
                uses_left = session.execute(
                    text("SELECT uses_left FROM tokens WHERE id = :id"), {"id": token_id}
                ).scalar_one()
        finally:
            services.close()
        lost = set(received) - stored
        assert not lost, f"{len(lost)} of {len(received)} certificates answered 201 are lost"
        assert stored <= audited, f"stored without an audit row: {stored - audited}"
        assert uses_left == MAX_USES - len(stored), "every stored certificate spent one use"
        # And the restarted server answers for them.
        status = httpx.get(f"{server.public_url}/v1/certificates/{received[-1]}/status")
        assert status.status_code == 200, status.text
    finally:
        stop_server(process)
