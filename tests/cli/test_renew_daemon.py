"""The renewal daemon's schedule, with a fake clock and sleep: it renews at two thirds of the
lifetime within the jitter, sleeps in bounded steps until then, runs --exec after each
renewal, retries failures, and gives up once the certificate has expired."""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.cli.renew import JITTER, MAX_SLEEP, RENEW_AT, RETRY_AFTER, renewal_due, run_daemon

START = datetime(2030, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(days=30)


def certificate(not_before: datetime, lifetime: timedelta = LIFETIME) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .sign(key, hashes.SHA256())
    )


class FakeTime:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= MAX_SLEEP.total_seconds(), seconds
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.mark.parametrize("seed", range(20))
def test_due_at_two_thirds_within_the_jitter(seed: int) -> None:
    due = renewal_due(certificate(START), random.Random(seed))

    middle = START + LIFETIME * RENEW_AT
    assert abs(due - middle) <= LIFETIME * JITTER, due


def test_jitter_spreads_a_fleet() -> None:
    rng = random.Random(1)
    dues = {renewal_due(certificate(START), rng) for _ in range(20)}

    assert len(dues) == 20


def renewals(fake: FakeTime, log: list[datetime]) -> Callable[[], x509.Certificate]:
    def renew() -> x509.Certificate:
        log.append(fake.now)
        return certificate(fake.now)

    return renew


def test_sleeps_until_due_then_renews_and_runs_exec(tmp_path: Path) -> None:
    fake = FakeTime(START)
    done: list[datetime] = []
    marker = tmp_path / "marker"

    status = run_daemon(
        renewals(fake, done),
        certificate(START),
        now=lambda: fake.now,
        sleep=fake.sleep,
        rng=random.Random(0),
        exec_command=f"{sys.executable} -c \"open(r'{marker}', 'a').write('x')\"",
        max_renewals=3,
    )

    assert status == 0
    assert len(done) == 3
    first_due = renewal_due(certificate(START), random.Random(0))
    assert done[0] >= first_due
    assert done[0] - first_due < timedelta(seconds=1)
    for previous, current in itertools.pairwise(done):
        # each successor, issued when renewed, is renewed two thirds into its own life
        assert abs(current - previous - LIFETIME * RENEW_AT) <= LIFETIME * JITTER
    assert marker.read_text() == "xxx", "--exec runs after every renewal"


def test_a_failed_renewal_is_retried(tmp_path: Path) -> None:
    fake = FakeTime(START + LIFETIME * 0.9)
    attempts: list[datetime] = []

    def flaky() -> x509.Certificate:
        attempts.append(fake.now)
        if len(attempts) < 3:
            raise typer.Exit(1)
        return certificate(fake.now)

    status = run_daemon(
        flaky,
        certificate(START),
        now=lambda: fake.now,
        sleep=fake.sleep,
        rng=random.Random(0),
        exec_command=None,
        max_renewals=1,
    )

    assert status == 1, "--once: the first failure is the answer"
    status = run_daemon(
        flaky,
        certificate(START),
        now=lambda: fake.now,
        sleep=fake.sleep,
        rng=random.Random(0),
        exec_command=None,
        max_renewals=2,
    )
    assert status == 0
    assert attempts[2] - attempts[1] == RETRY_AFTER


def test_gives_up_once_the_certificate_expired() -> None:
    fake = FakeTime(START + LIFETIME + timedelta(seconds=1))

    def failing() -> x509.Certificate:
        raise typer.Exit(1)

    status = run_daemon(
        failing,
        certificate(START),
        now=lambda: fake.now,
        sleep=fake.sleep,
        rng=random.Random(0),
        exec_command=None,
    )

    assert status == 1
