"""Status batches (app.services.status_batches): one writer per process; changes that queue
while a batch waits for its locks join it when their CA's row is already held, and wait for
the next batch otherwise; every caller gets its own answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.errors import ConflictError, NotFoundError
from app.services.certificates import CertificateInfo
from app.services.container import Services
from tests.helpers import csr_pem

pytestmark = pytest.mark.db

WAIT_SECONDS = 30


def issue(services: Services, name: str) -> str:
    created = services.tokens.create(
        actor="test",
        profiles=["peer"],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    enrolled = services.enrollment.enroll(
        token=created.token, csr_data=csr_pem(name), profile="peer", validity_days=None
    )
    return enrolled.serial


def held_first_batch(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """The writer's first batch stops once it holds its CA locks, until `release` is set;
    `holding` says it got there."""
    holding, release = threading.Event(), threading.Event()
    reserve = services.crls.reserve_number

    def reserve_and_hold(session: Session, ca_id: str) -> int:
        number = reserve(session, ca_id)
        if not holding.is_set():
            holding.set()
            assert release.wait(WAIT_SECONDS), "the test never released the batch"
        return number

    monkeypatch.setattr(services.crls, "reserve_number", reserve_and_hold)
    return holding, release


def revoke(services: Services, serial: str, reason: str = "keyCompromise") -> Future[Any]:
    return services.revocation.start_revoke(
        serial, reason=reason, invalidity_date=None, actor="test"
    )


def crl_numbers(services: Services) -> dict[str, tuple[int, str]]:
    """target -> (the CRL number its audit row names, the CA that CRL is of)."""
    with services.db.read() as session:
        rows = session.execute(
            text(
                "SELECT a.target, a.details, c.ca_id FROM audit_log a"
                " JOIN certificates c ON c.serial = a.target"
                " WHERE a.action = 'certificate.revoke' ORDER BY a.id"
            )
        ).all()
    return {row.target: (int(_details(row.details)["crl_number"]), row.ca_id) for row in rows}


def _details(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)


def test_late_changes_join_a_batch_of_their_ca_and_others_wait(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, same_ca = issue(services, "a1.zone"), issue(services, "a2.zone")
    services.authorities.rotate(actor="test")
    other_ca = issue(services, "b1.zone")
    holding, release = held_first_batch(services, monkeypatch)

    leading = revoke(services, first)
    assert holding.wait(WAIT_SECONDS), "the first batch never took its locks"
    late = {
        "same CA": revoke(services, same_ca),
        "other CA": revoke(services, other_ca),
        "never issued": revoke(services, "5a" * 19),
        "again": revoke(services, first, "superseded"),
    }
    release.set()

    assert isinstance(leading.result(WAIT_SECONDS), CertificateInfo)
    assert late["same CA"].result(WAIT_SECONDS).revocation_reason == "keyCompromise"
    assert late["other CA"].result(WAIT_SECONDS).revocation_reason == "keyCompromise"
    with pytest.raises(NotFoundError):
        late["never issued"].result(WAIT_SECONDS)
    with pytest.raises(ConflictError):
        late["again"].result(WAIT_SECONDS)
    numbers = crl_numbers(services)
    assert numbers[first] == numbers[same_ca], f"joined the held batch: {numbers}"
    assert numbers[other_ca][1] != numbers[first][1], numbers
    for serial, (number, ca_id) in numbers.items():
        crl = services.crls.latest(ca_id)
        assert crl.number >= number, (serial, crl.number, number)


def test_every_caller_waits_for_its_own_commit(services: Services) -> None:
    """Many threads at once: each answer is its own certificate, committed when it returns."""
    serials = [issue(services, f"c{n}.zone") for n in range(12)]
    answers: dict[str, CertificateInfo] = {}
    lock = threading.Lock()

    def one(serial: str) -> Callable[[], None]:
        def run() -> None:
            info = services.revocation.revoke(
                serial, reason="superseded", invalidity_date=None, actor="test"
            )
            assert services.certificates.get(serial).revoked_at is not None, "committed"
            with lock:
                answers[serial] = info

        return run

    threads = [threading.Thread(target=one(s)) for s in serials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert {s: a.serial for s, a in answers.items()} == {s: s for s in serials}
    assert set(crl_numbers(services)) == set(serials)


def test_a_cancelled_caller_is_dropped_unless_its_change_was_taken(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while queued (its client went away) changes nothing; once its
    batch took it, it can no longer be cancelled and the rest of the batch is answered."""
    taken, dropped, after = (issue(services, f"{n}.zone") for n in ("taken", "dropped", "after"))
    holding, release = held_first_batch(services, monkeypatch)

    leading = revoke(services, taken)
    assert holding.wait(WAIT_SECONDS), "the first batch never took its locks"
    queued = revoke(services, dropped)
    following = revoke(services, after)
    assert queued.cancel(), "a queued change can be cancelled"
    assert not leading.cancel(), "a change being committed cannot"
    release.set()

    assert leading.result(WAIT_SECONDS).serial == taken
    assert following.result(WAIT_SECONDS).serial == after
    assert services.certificates.get(dropped).revoked_at is None
    assert set(crl_numbers(services)) == {taken, after}
