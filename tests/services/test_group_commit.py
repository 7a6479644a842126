"""Group commit: enrollments that share one transaction succeed or fail each on their own, a
token's uses are never over-spent, and every stored certificate has its audit row.

The writer is held busy by a write that waits on an event, so the enrollments queue behind it
and the next batch takes them all at once (MAX_BATCH is far above their number)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db.tokens import spend_use
from app.errors import TokenRejectedError
from app.services.container import Services
from app.services.enrollment import IssuedCertificate
from app.services.group_commit import GroupCommitter
from app.services.tokens import CreatedToken
from tests.helpers import csr_pem

pytestmark = pytest.mark.db

WAIT_SECONDS = 30


def create_token(services: Services, *, max_uses: int) -> CreatedToken:
    return services.tokens.create(
        actor="test",
        profiles=["server"],
        names=["*.batch.example.internal"],
        ttl=timedelta(hours=1),
        max_uses=max_uses,
        max_validity_days=None,
    )


class HeldWrite:
    """A write that keeps the writer busy until released, so the next writes queue behind it."""

    def __init__(self) -> None:
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, _session: Session) -> str:
        self.holding.set()
        self.release.wait(WAIT_SECONDS)
        return "stored"


def write_nothing(_session: Session) -> str:
    return "stored"


@contextmanager
def one_batch(services: Services, expected: int) -> Iterator[ThreadPoolExecutor]:
    """Hold the writer until `expected` writes are queued behind it, then let it go: the
    writes submitted through the yielded pool meet in one batch."""
    hold = HeldWrite()
    with ThreadPoolExecutor(max_workers=expected + 1) as pool:
        blocker = pool.submit(services.committer.submit, hold)
        assert hold.holding.wait(WAIT_SECONDS), "the writer never ran the holding write"
        deadline = time.monotonic() + WAIT_SECONDS
        yield pool
        while services.committer.queued() < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = services.committer.queued()
        hold.release.set()
        blocker.result(WAIT_SECONDS)
    assert queued == expected, f"{queued} of {expected} enrollments were queued together"


def enroll(services: Services, token: CreatedToken, name: str) -> Callable[[], IssuedCertificate]:
    csr = csr_pem(name)
    return lambda: services.enrollment.enroll(token=token.token, csr_data=csr, profile="server")


def outcome(future: Future[IssuedCertificate]) -> str:
    try:
        return f"issued {future.result(WAIT_SECONDS).serial}"
    except TokenRejectedError:
        return "token rejected"


def stored(services: Services) -> dict[str, str | None]:
    """serial -> token id of every certificate stored by enrollment (init's have no token)."""
    with services.db.read() as session:
        rows = session.execute(
            text("SELECT serial, token_id FROM certificates WHERE token_id IS NOT NULL")
        )
        return {serial: token_id for serial, token_id in rows}


def issue_audit_targets(services: Services) -> list[str]:
    with services.db.read() as session:
        rows = session.execute(
            text("SELECT target FROM audit_log WHERE action = 'certificate.issue'")
        )
        return [target for (target,) in rows]


def uses_left(services: Services, token: CreatedToken) -> int:
    with services.db.read() as session:
        value = session.execute(
            text("SELECT uses_left FROM tokens WHERE id = :id"), {"id": token.id}
        ).scalar_one()
    return int(value)


def test_spent_token_fails_only_its_own_request(services: Services) -> None:
    spent = create_token(services, max_uses=1)
    good = create_token(services, max_uses=5)
    # The process has seen the token (its grant is cached), then its last use goes elsewhere:
    # the refusal can only come from the spend inside the batch.
    services.tokens.authenticate_for_enrollment(spent.token)
    with services.db.write() as session:
        assert spend_use(session, spent.id, services.clock.now())

    with one_batch(services, expected=4) as pool:
        futures = {
            "spent": pool.submit(enroll(services, spent, "a.batch.example.internal")),
            **{
                f"good {n}": pool.submit(enroll(services, good, f"g{n}.batch.example.internal"))
                for n in range(3)
            },
        }

    outcomes = {label: outcome(future) for label, future in futures.items()}
    assert outcomes["spent"] == "token rejected", outcomes
    issued = {label: o for label, o in outcomes.items() if o.startswith("issued")}
    assert sorted(issued) == ["good 0", "good 1", "good 2"], outcomes
    serials = {o.removeprefix("issued ") for o in issued.values()}
    assert stored(services) == dict.fromkeys(serials, good.id), outcomes
    assert uses_left(services, good) == 2
    assert uses_left(services, spent) == 0


def test_last_use_raced_in_one_batch_is_won_once(services: Services) -> None:
    token = create_token(services, max_uses=1)
    other = create_token(services, max_uses=2)

    with one_batch(services, expected=6) as pool:
        racers = [
            pool.submit(enroll(services, token, f"r{n}.batch.example.internal")) for n in range(5)
        ]
        bystander = pool.submit(enroll(services, other, "b.batch.example.internal"))

    outcomes = [outcome(f) for f in racers]
    winners = [o.removeprefix("issued ") for o in outcomes if o.startswith("issued")]
    assert len(winners) == 1, outcomes
    assert outcomes.count("token rejected") == 4, outcomes
    bystander_serial = outcome(bystander).removeprefix("issued ")
    assert stored(services) == {winners[0]: token.id, bystander_serial: other.id}
    assert uses_left(services, token) == 0
    assert uses_left(services, other) == 1


def test_every_certificate_of_a_batch_has_its_audit_row(services: Services) -> None:
    token = create_token(services, max_uses=10)
    spent = create_token(services, max_uses=1)

    with one_batch(services, expected=10) as pool:
        futures = [
            pool.submit(enroll(services, token, f"c{n}.batch.example.internal")) for n in range(8)
        ]
        futures += [
            pool.submit(enroll(services, spent, f"s{n}.batch.example.internal")) for n in range(2)
        ]

    outcomes = [outcome(f) for f in futures]
    certificates = stored(services)
    assert len(certificates) == 9, outcomes
    missing = set(certificates) - set(issue_audit_targets(services))
    assert not missing, f"certificates without a certificate.issue audit row: {missing}"


def test_a_write_that_breaks_is_retried_alone_and_fails_alone(services: Services) -> None:
    """Not a refusal but an unexpected error: the batch is rolled back and every other write
    is stored by a transaction of its own."""
    token = create_token(services, max_uses=3)

    def broken(session: Session) -> None:
        session.flush()
        raise RuntimeError("a write that breaks")

    with one_batch(services, expected=4) as pool:
        good = [
            pool.submit(enroll(services, token, f"k{n}.batch.example.internal")) for n in range(3)
        ]
        failing = pool.submit(services.committer.submit, broken)

    serials = {f.result(WAIT_SECONDS).serial for f in good}
    with pytest.raises(RuntimeError, match="a write that breaks"):
        failing.result(WAIT_SECONDS)
    assert stored(services) == dict.fromkeys(serials, token.id)
    assert uses_left(services, token) == 0


def test_the_writer_lingers_only_after_a_batch_of_several(services: Services) -> None:
    """A lone request commits at once; after a batch of several writes (concurrent load) the
    writer waits before the next, so more writes share its commit: `linger` seconds when no
    event loop submitted writes (below, when one did)."""
    lingered: list[float] = []
    committer = GroupCommitter(services.db, linger=0.5, sleep=lingered.append)
    hold = HeldWrite()
    try:
        assert committer.submit(write_nothing) == "stored"  # alone, nothing before: no wait
        held = committer.submit_nowait(hold)
        assert hold.holding.wait(WAIT_SECONDS)
        queued = [committer.submit_nowait(write_nothing) for _ in range(3)]  # a batch of three
        hold.release.set()
        assert [f.result(WAIT_SECONDS) for f in [held, *queued]] == ["stored"] * 4
        assert lingered == []
        assert committer.submit(write_nothing) == "stored"  # after the batch of three: waits
        assert lingered == [0.5]
        assert committer.submit(write_nothing) == "stored"  # after a batch of one: at once
        assert lingered == [0.5]
    finally:
        committer.close()


def test_under_load_the_writer_waits_for_the_submitting_event_loop(services: Services) -> None:
    """After a batch of several, the writer waits until the event loop that submitted the last
    write has turned (it has then submitted what it had read), at most `linger`: while that
    loop is busy the next write waits; once it turns, the write commits, long before `linger`."""
    committer = GroupCommitter(services.db, linger=WAIT_SECONDS)
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever)
    loop_thread.start()
    hold, busy, free = HeldWrite(), threading.Event(), threading.Event()

    async def submit(write: Callable[[Session], str]) -> Future[str]:
        return committer.submit_nowait(write)  # from the loop, as the fast paths submit

    def from_loop(write: Callable[[Session], str]) -> Future[str]:
        return asyncio.run_coroutine_threadsafe(submit(write), loop).result(WAIT_SECONDS)

    def keep_busy() -> None:  # a request the loop is still working on
        busy.set()
        free.wait(WAIT_SECONDS)

    try:
        held = from_loop(hold)
        assert hold.holding.wait(WAIT_SECONDS)
        queued = [from_loop(write_nothing) for _ in range(3)]  # the next batch: several
        hold.release.set()
        assert [f.result(WAIT_SECONDS) for f in [held, *queued]] == ["stored"] * 4
        loop.call_soon_threadsafe(keep_busy)
        assert busy.wait(WAIT_SECONDS)
        waiting = committer.submit_nowait(write_nothing)
        time.sleep(0.3)
        assert not waiting.done(), "committed while the submitting loop was busy"
        started = time.monotonic()
        free.set()
        assert waiting.result(WAIT_SECONDS) == "stored"
        assert time.monotonic() - started < WAIT_SECONDS / 3, "waited for linger, not the loop"
    finally:
        free.set()
        hold.release.set()
        committer.close()
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(WAIT_SECONDS)
        loop.close()
