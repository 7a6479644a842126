"""Single use held where it lives: callers racing for a token's last use through
`EnrollmentService.enroll` (threads, and processes with their own Services), not through the
token query alone.

Enrollment authenticates the token, signs, then spends the use and stores the certificate in
one transaction. The race worth testing is the one in which every caller has already passed
authentication and signed when the first one commits: each test holds its callers at a
barrier right after `authenticate` (the real one) so that they all reach the spend together.
An enrollment that skipped or ignored the spend would then issue more than `max_uses`
certificates, and these tests fail.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.clock import SystemClock
from app.config import Settings
from app.errors import TokenRejectedError
from app.services.container import Services
from app.services.tokens import CreatedToken, TokenGrant
from tests.conftest import make_settings
from tests.helpers import csr_pem

pytestmark = pytest.mark.db

BARRIER_SECONDS = 60
PROCESS_SECONDS = 120


def create_token(services: Services, *, max_uses: int) -> CreatedToken:
    return services.tokens.create(
        actor="test",
        profiles=["server"],
        names=["*.race.example.internal"],
        ttl=timedelta(hours=1),
        max_uses=max_uses,
        max_validity_days=None,
    )


def hold_after_authenticate(services: Services, barrier: Any) -> None:
    """Make every caller of this Services wait at `barrier` once its token is accepted (by
    the check enrollment makes, cached grants included), so all of them hold a valid grant
    before any of them spends a use."""
    authenticate: Callable[[str | None], TokenGrant] = services.tokens.authenticate_for_enrollment

    def held(token: str | None) -> TokenGrant:
        grant = authenticate(token)
        barrier.wait(timeout=BARRIER_SECONDS)
        return grant

    services.tokens.authenticate_for_enrollment = held  # type: ignore[method-assign]


def rows_for_token(services: Services, token_id: str) -> tuple[int, int]:
    """(certificate rows issued with the token, uses left on it)."""
    with services.db.read() as session:
        issued = session.execute(
            text("SELECT count(*) FROM certificates WHERE token_id = :id"), {"id": token_id}
        ).scalar_one()
        left = session.execute(
            text("SELECT uses_left FROM tokens WHERE id = :id"), {"id": token_id}
        ).scalar_one()
    return int(issued), int(left)


@pytest.mark.parametrize(
    ("max_uses", "callers"),
    [
        pytest.param(1, 8, id="last use/8 threads"),
        pytest.param(3, 8, id="3 uses/8 threads"),
    ],
)
def test_threads_racing_through_enroll_issue_exactly_max_uses(
    services: Services, max_uses: int, callers: int
) -> None:
    created = create_token(services, max_uses=max_uses)
    hold_after_authenticate(services, threading.Barrier(callers))

    def enroll(index: int) -> str:
        try:
            issued = services.enrollment.enroll(
                token=created.token, csr_data=csr_pem(f"t{index}.race.example.internal")
            )
        except TokenRejectedError:
            return "rejected"
        return issued.serial

    with ThreadPoolExecutor(callers) as pool:
        outcomes = list(pool.map(enroll, range(callers)))

    serials = [o for o in outcomes if o != "rejected"]
    issued, left = rows_for_token(services, created.id)
    assert len(serials) == max_uses, f"outcomes: {outcomes}"
    assert outcomes.count("rejected") == callers - max_uses, f"outcomes: {outcomes}"
    assert (issued, left) == (max_uses, 0), f"rows {issued}, uses left {left}; {outcomes}"
    for serial in serials:
        assert services.certificates.get(serial).serial == serial


def enroll_in_process(
    settings_fields: dict[str, str], token: str, start: Any, results: Any, index: int
) -> None:
    """Runs in a spawned process: its own Services (engine, keyring), built before the race."""
    try:
        settings = make_settings(
            data_dir=Path(settings_fields["data_dir"]),
            database_url=settings_fields["database_url"],
            kek=settings_fields["kek"],
        )
        services = Services(settings, clock=SystemClock())
        try:
            hold_after_authenticate(services, start)
            try:
                issued = services.enrollment.enroll(
                    token=token, csr_data=csr_pem(f"p{index}.race.example.internal")
                )
                results.put((index, issued.serial))
            except TokenRejectedError:
                results.put((index, "rejected"))
        finally:
            services.close()
    except BaseException as exc:
        results.put((index, f"failed: {type(exc).__name__}: {exc}"))
        raise


@pytest.mark.slow
@pytest.mark.parametrize("processes", [pytest.param(4, id="4 processes")])
def test_processes_racing_through_enroll_issue_one_certificate(
    services: Services, initialised_settings: Settings, processes: int
) -> None:
    """Each process has its own engine, so only the database can serialise the spend (on
    PostgreSQL the conditional UPDATE's row lock; on SQLite the write lock)."""
    created = create_token(services, max_uses=1)
    fields = {
        "data_dir": str(initialised_settings.data_dir),
        "database_url": initialised_settings.effective_database_url,
        "kek": initialised_settings.kek or "",
    }
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=enroll_in_process, args=(fields, created.token, start, results, index)
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes: dict[int, str] = {}
    try:
        for _ in workers:
            index, outcome = results.get(timeout=PROCESS_SECONDS)
            outcomes[index] = outcome
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {processes} processes answered: {outcomes}")
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()

    assert not [o for o in outcomes.values() if o.startswith("failed")], outcomes
    winners = [o for o in outcomes.values() if o != "rejected"]
    issued, left = rows_for_token(services, created.id)
    assert len(winners) == 1, f"outcomes by process: {outcomes}"
    assert (issued, left) == (1, 0), f"rows {issued}, uses left {left}; {outcomes}"
    assert services.certificates.get(winners[0]).serial == winners[0]
