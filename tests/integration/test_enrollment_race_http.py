"""Single use over HTTP: several clients send `POST /v1/certificates` with one token of one
use to a live `mintca serve` with two workers, released together. Exactly one gets 201, the
others 401, and the database holds exactly one certificate for the token.

Each round is a fresh token; several rounds make it likely that callers pass authentication
before the first commit (the window an enrollment that ignored a spent use would leak
through), without depending on it in any one round.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.engine import Database
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.slow]

CLIENTS = 8
ROUNDS = 4
TIMEOUT = 60


@pytest.fixture
def two_workers(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        yield server
    finally:
        stop_server(process)


def certificates_for(settings: Settings, token_id: str) -> int:
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        with db.read() as session:
            count = session.execute(
                text("SELECT count(*) FROM certificates WHERE token_id = :id"), {"id": token_id}
            ).scalar_one()
    finally:
        db.dispose()
    return int(count)


def race_one_token(server: LiveServer, token: str, round_: int) -> list[tuple[int, str]]:
    """CLIENTS connections, each warmed up with /health, then one enrollment each at once."""
    barrier = threading.Barrier(CLIENTS, timeout=TIMEOUT)

    def enroll(index: int) -> tuple[int, str]:
        name = f"r{round_}-c{index}.internal"
        body = {"csr": csr_pem(name)}
        with server.public_client() as client:
            client.get("/health").raise_for_status()
            barrier.wait()
            answer = client.post(
                "/v1/certificates", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        return answer.status_code, answer.text

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(enroll, range(CLIENTS)))


def test_clients_racing_for_one_use_over_http(
    two_workers: LiveServer, initialised_settings: Settings
) -> None:
    statuses: list[list[int]] = []
    with two_workers.admin_client() as admin:
        for round_ in range(ROUNDS):
            made = admin.post("/admin/tokens", json={"names": ["*.internal"], "max_uses": 1})
            assert made.status_code == 201, made.text
            token, token_id = made.json()["token"], made.json()["id"]

            answers = race_one_token(two_workers, token, round_)

            codes = sorted(status for status, _ in answers)
            statuses.append(codes)
            report = "\n".join(f"{status}: {body[:200]}" for status, body in answers)
            assert codes.count(201) == 1, f"round {round_}:\n{report}"
            assert codes.count(401) == CLIENTS - 1, f"round {round_}:\n{report}"
            rows = certificates_for(initialised_settings, token_id)
            assert rows == 1, f"round {round_}: {rows} certificates for one use\n{report}"
    print(f"\nsingle use over HTTP: {ROUNDS} rounds x {CLIENTS} clients -> {statuses}")
