"""Enrollment tokens: shown once, stored as a SHA-256 hash, rejected when expired or used up,
and spent atomically when threads or processes race for the last use."""

from __future__ import annotations

import hashlib
import multiprocessing
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from app.clock import FixedClock
from app.db.engine import Database
from app.db.tokens import spend_use
from app.errors import TokenRejectedError
from app.services.container import Services
from app.services.tokens import TOKEN_PREFIX, CreatedToken

pytestmark = pytest.mark.db

TTL = timedelta(hours=1)


def create_token(services: Services, *, max_uses: int = 1, ttl: timedelta = TTL) -> CreatedToken:
    return services.tokens.create(
        actor="test",
        profiles=["server"],
        names=["*.svc.example.internal"],
        ttl=ttl,
        max_uses=max_uses,
        max_validity_days=None,
    )


def spend(services: Services, token_id: str) -> bool:
    with services.db.write() as session:
        return spend_use(session, token_id, services.clock.now())


def uses_left(services: Services, token_id: str) -> int:
    with services.db.read() as session:
        value = session.execute(
            text("SELECT uses_left FROM tokens WHERE id = :id"), {"id": token_id}
        ).scalar_one()
    return int(value)


def test_created_token_authenticates(services: Services, clock: FixedClock) -> None:
    created = create_token(services, max_uses=3)

    grant = services.tokens.authenticate(created.token)

    assert created.token.startswith(TOKEN_PREFIX), created.token[:12]
    assert created.expires_at == clock.now() + TTL
    assert grant.id == created.id
    assert grant.profiles == ("server",)
    assert grant.names == ("*.svc.example.internal",)
    assert uses_left(services, created.id) == 3, "authenticating must not spend a use"


def test_token_is_stored_only_as_its_sha256(services: Services) -> None:
    created = create_token(services)
    secret_body = created.token.removeprefix(TOKEN_PREFIX)

    with services.db.read() as session:
        token_rows = session.execute(
            text("SELECT * FROM tokens WHERE id = :id"), {"id": created.id}
        ).all()
        audit_rows = session.execute(text("SELECT * FROM audit_log")).all()

    assert len(token_rows) == 1
    row = token_rows[0]._mapping
    assert row["secret_hash"] == hashlib.sha256(created.token.encode()).hexdigest()
    for where, rows in (("tokens", token_rows), ("audit_log", audit_rows)):
        for stored in rows:
            for column, value in stored._mapping.items():
                shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                assert secret_body not in shown, f"the token secret is stored in {where}.{column}"


def expire_exactly(services: Services, clock: FixedClock, created: CreatedToken) -> None:
    clock.advance(seconds=TTL.total_seconds())


def expire_long_ago(services: Services, clock: FixedClock, created: CreatedToken) -> None:
    clock.advance(days=30)


def use_up(services: Services, clock: FixedClock, created: CreatedToken) -> None:
    assert spend(services, created.id), "the first spend of a fresh token must succeed"


Spoil = Callable[[Services, FixedClock, CreatedToken], None]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(expire_exactly, id="expired/at expires_at"),
        pytest.param(expire_long_ago, id="expired/30 days later"),
        pytest.param(use_up, id="used up/1 of 1"),
    ],
)
def test_spoiled_token_is_rejected(services: Services, clock: FixedClock, spoil: Spoil) -> None:
    created = create_token(services)
    services.tokens.authenticate(created.token)  # good before

    spoil(services, clock, created)

    with pytest.raises(TokenRejectedError):
        services.tokens.authenticate(created.token)
    assert not spend(services, created.id), "a spoiled token must not be spendable either"


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param(TOKEN_PREFIX + "x" * 43, id="unknown"),
        pytest.param("stored hash", id="the stored hash itself"),
    ],
)
def test_unknown_token_is_rejected(services: Services, presented: str | None) -> None:
    created = create_token(services)
    if presented == "stored hash":
        presented = hashlib.sha256(created.token.encode()).hexdigest()

    with pytest.raises(TokenRejectedError):
        services.tokens.authenticate(presented)


def test_token_allows_exactly_max_uses(services: Services) -> None:
    created = create_token(services, max_uses=3)

    results = [spend(services, created.id) for _ in range(4)]

    assert results == [True, True, True, False]
    with pytest.raises(TokenRejectedError):
        services.tokens.authenticate(created.token)


@pytest.mark.parametrize(
    ("max_uses", "threads"),
    [
        pytest.param(1, 8, id="last use/8 threads"),
        pytest.param(3, 8, id="3 uses/8 threads"),
    ],
)
def test_threads_racing_spend_exactly_max_uses(
    services: Services, max_uses: int, threads: int
) -> None:
    created = create_token(services, max_uses=max_uses)
    start = threading.Barrier(threads)

    def race(_: int) -> bool:
        start.wait(timeout=30)
        return spend(services, created.id)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(race, range(threads)))

    assert results.count(True) == max_uses, f"winners: {results}"
    assert uses_left(services, created.id) == 0


def spend_in_process(
    url: str, token_id: str, now: datetime, start: Any, results: Any, index: int
) -> None:
    """Runs in a spawned process: its own Database, connected before the start signal."""
    try:
        db = Database(url, pool_size=1)
        try:
            db.ping()
            start.wait(timeout=60)
            with db.write() as session:
                results.put((index, spend_use(session, token_id, now)))
        finally:
            db.dispose()
    except BaseException as exc:
        results.put((index, f"{type(exc).__name__}: {exc}"))
        raise


@pytest.mark.parametrize(
    "processes", [pytest.param(2, id="2 processes"), pytest.param(4, id="4 processes")]
)
def test_processes_racing_for_the_last_use(services: Services, processes: int) -> None:
    created = create_token(services, max_uses=1)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=spend_in_process,
            args=(
                services.settings.effective_database_url,
                created.id,
                services.clock.now(),
                start,
                results,
                index,
            ),
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes: dict[int, object] = {}
    try:
        for _ in workers:
            index, outcome = results.get(timeout=120)
            outcomes[index] = outcome
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {processes} processes answered: {outcomes}")
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()

    assert all(isinstance(o, bool) for o in outcomes.values()), f"a process failed: {outcomes}"
    assert list(outcomes.values()).count(True) == 1, f"winners by process: {outcomes}"
    assert uses_left(services, created.id) == 0
