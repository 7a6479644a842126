"""The enrollment fast path over real sockets, against `mintca serve` with two workers.

Each connection first sends a request the token allows but whose name it refuses (403): that
request authenticates the token, so the grant is cached in the worker that holds the connection,
and every later request on the connection is answered by the fast path (app.api.enroll_fast),
not by the FastAPI route. Then:
- concurrent clients enroll: every 201 is in the database byte for byte, with its audit entry
  (the hash chain holds) and its token use spent;
- clients race for a token's last use: exactly one 201, the others 401, one row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text

from app.ca.audit_chain import ChainEntry, StoredEntry, first_broken
from app.config import Settings
from app.services.audit import AuditEntry
from app.services.container import Services
from tests.helpers import csr_pem
from tests.integration.live import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.db, pytest.mark.slow]

CLIENTS = 8
PER_CLIENT = 25
RACE_ROUNDS = 3
TIMEOUT = 60


@pytest.fixture
def two_workers(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        yield server
    finally:
        stop_server(process)


def make_token(server: LiveServer, *, max_uses: int) -> tuple[str, str]:
    with server.admin_client() as admin:
        made = admin.post(
            "/admin/tokens",
            json={"names": ["*.fast.internal"], "profile": "server", "max_uses": max_uses},
        )
    assert made.status_code == 201, made.text
    return made.json()["token"], made.json()["id"]


def warm(client: httpx.Client, token: str) -> None:
    """Authenticate the token in this connection's worker without spending a use."""
    refused = client.post(
        "/v1/certificates",
        json={"csr": csr_pem("outside.example")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403, refused.text


def enroll(client: httpx.Client, token: str, name: str) -> httpx.Response:
    return client.post(
        "/v1/certificates",
        json={"csr": csr_pem(name), "profile": "server"},
        headers={"Authorization": f"Bearer {token}"},
    )


def rows(settings: Settings, sql: str, **params: Any) -> list[Any]:
    services = Services(settings)
    try:
        with services.db.read() as session:
            return list(session.execute(text(sql), params))
    finally:
        services.close()


def audit_chain_holds(settings: Settings) -> tuple[int | None, int]:
    """(the first broken entry or None, entries walked) over the whole chain."""
    services = Services(settings)
    try:
        head = services.audit.head()
        entries: list[AuditEntry] = []
        after = 0
        while True:
            page, after_id = services.audit.chain(after_id=after, up_to_id=head.id, limit=1000)
            entries.extend(page)
            if after_id is None:
                break
            after = after_id
    finally:
        services.close()
    stored = [
        StoredEntry(
            ChainEntry(e.id, e.at, e.actor, e.action, e.target, e.details, e.prev_hash), e.hash
        )
        for e in entries
    ]
    broken, last_hash = first_broken(stored)
    if broken is None and last_hash != head.hash:
        broken = head.id
    return broken, len(stored)


def test_every_201_of_concurrent_fast_enrollments_is_stored(
    two_workers: LiveServer, initialised_settings: Settings
) -> None:
    max_uses = CLIENTS * PER_CLIENT + 10
    token, token_id = make_token(two_workers, max_uses=max_uses)
    answered: list[tuple[str, bytes]] = []
    failures: list[str] = []

    def client_run(index: int) -> None:
        with two_workers.public_client() as client:
            warm(client, token)
            for n in range(PER_CLIENT):
                answer = enroll(client, token, f"c{index}-{n}.fast.internal")
                if answer.status_code != 201:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                pem = answer.json()["certificate"].encode()
                der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
                answered.append((answer.json()["serial"], der))

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client_run, range(CLIENTS)))

    assert not failures, failures[:5]
    assert len(answered) == CLIENTS * PER_CLIENT
    stored = dict(
        rows(
            initialised_settings,
            "SELECT serial, der FROM certificates WHERE token_id = :id",
            id=token_id,
        )
    )
    missing = [serial for serial, _ in answered if serial not in stored]
    assert not missing, f"{len(missing)} certificates answered 201 are not stored"
    assert all(bytes(stored[serial]) == der for serial, der in answered), "stored DER differs"
    assert len(stored) == len(answered), "rows without a 201"
    audited = {
        target
        for (target,) in rows(
            initialised_settings,
            "SELECT target FROM audit_log WHERE action = 'certificate.issue' AND actor = :actor",
            actor=f"token:{token_id}",
        )
    }
    assert audited == set(stored), "every stored certificate has exactly its audit entry"
    ((uses_left,),) = rows(
        initialised_settings, "SELECT uses_left FROM tokens WHERE id = :id", id=token_id
    )
    assert uses_left == max_uses - len(stored)
    broken, walked = audit_chain_holds(initialised_settings)
    assert broken is None, f"the audit chain breaks at entry {broken} of {walked}"


def test_single_use_holds_when_fast_enrollments_race(
    two_workers: LiveServer, initialised_settings: Settings
) -> None:
    outcomes: list[list[int]] = []
    for round_ in range(RACE_ROUNDS):
        token, token_id = make_token(two_workers, max_uses=1)
        barrier = threading.Barrier(CLIENTS, timeout=TIMEOUT)

        def race(
            index: int,
            token: str = token,
            round_: int = round_,
            barrier: threading.Barrier = barrier,
        ) -> tuple[int, str]:
            with two_workers.public_client() as client:
                warm(client, token)
                barrier.wait()
                answer = enroll(client, token, f"r{round_}-{index}.fast.internal")
            return answer.status_code, answer.text

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(race, range(CLIENTS)))
        codes = sorted(status for status, _ in answers)
        outcomes.append(codes)
        report = "\n".join(f"{status}: {body[:200]}" for status, body in answers)
        assert codes.count(201) == 1, f"round {round_}:\n{report}"
        assert codes.count(401) == CLIENTS - 1, f"round {round_}:\n{report}"
        stored = rows(
            initialised_settings,
            "SELECT count(*) FROM certificates WHERE token_id = :id",
            id=token_id,
        )
        assert stored[0][0] == 1, f"round {round_}: {stored[0][0]} certificates for one use"
    print(f"\nsingle use on the fast path: {RACE_ROUNDS} rounds x {CLIENTS} clients -> {outcomes}")
