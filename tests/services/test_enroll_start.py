"""What the enrollment fast path relies on in the services: `TokenService.cached_grant` answers
from memory only, `EnrollmentService.start` returns a future that resolves only after the
commit (a refused spend fails it with TokenRejectedError and drops the cached grant), and
`GroupCommitter.submit_nowait` refuses once the committer is closed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.clock import FixedClock
from app.errors import ServiceUnavailableError, TokenRejectedError
from app.services.container import Services
from app.services.tokens import CreatedToken
from tests.helpers import csr_pem

pytestmark = pytest.mark.db

WAIT_SECONDS = 30


def make_token(services: Services, *, max_uses: int = 1) -> CreatedToken:
    return services.tokens.create(
        actor="test",
        profiles=["server"],
        names=["*.start.example.internal"],
        ttl=timedelta(hours=1),
        max_uses=max_uses,
        max_validity_days=None,
    )


def stored(services: Services, serial: str) -> int:
    with services.db.read() as session:
        query = text("SELECT count(*) FROM certificates WHERE serial = :serial")
        return int(session.execute(query, {"serial": serial}).scalar_one())


def test_cached_grant_is_memory_only_and_expires(services: Services, clock: FixedClock) -> None:
    created = make_token(services)
    assert services.tokens.cached_grant(created.token) is None, "never looked up: no grant"
    assert services.tokens.cached_grant(None) is None
    grant = services.tokens.authenticate(created.token)
    assert services.tokens.cached_grant(created.token) == grant
    assert services.tokens.cached_grant("mintca_unknown") is None
    clock.advance(hours=2)  # past the token's expiry
    assert services.tokens.cached_grant(created.token) is None


def test_start_resolves_after_the_commit(services: Services) -> None:
    created = make_token(services)
    grant = services.tokens.authenticate(created.token)
    future = services.enrollment.start(
        grant, token=created.token, csr_data=csr_pem("a.start.example.internal")
    )
    issued = future.result(WAIT_SECONDS)
    assert stored(services, issued.serial) == 1, "resolved before its row was committed"
    assert issued.profile == "server"
    assert issued.chain[0].subject == issued.certificate.issuer


def test_refused_spend_fails_the_future_and_forgets_the_grant(services: Services) -> None:
    created = make_token(services, max_uses=1)
    grant = services.tokens.authenticate(created.token)
    first = services.enrollment.start(
        grant, token=created.token, csr_data=csr_pem("a.start.example.internal")
    )
    first.result(WAIT_SECONDS)
    second = services.enrollment.start(
        grant, token=created.token, csr_data=csr_pem("b.start.example.internal")
    )
    with pytest.raises(TokenRejectedError):
        second.result(WAIT_SECONDS)
    assert services.tokens.cached_grant(created.token) is None, "a used-up grant stays cached"


def test_submit_nowait_refuses_when_closed(services: Services) -> None:
    def write(_session: Session) -> int:
        return 1

    assert services.committer.submit_nowait(write).result(WAIT_SECONDS) == 1
    services.committer.close()
    with pytest.raises(ServiceUnavailableError):
        services.committer.submit_nowait(write)
