"""The revocation fast path (app.api.revoke_fast) in front of the mtls app: what it answers
itself is byte for byte what the FastAPI route answers, everything else reaches the route, and
its cached peer check refuses a revoked operator on the next request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from app.api.apps import create_mtls_app
from app.api.revoke_fast import RevokeFastPath
from app.clock import FixedClock
from app.server.tls_scope import TLSScopeApp
from app.services.container import Services
from app.services.peers import PeerService
from app.services.status_signal import StatusSignal

NEVER = "5a" * 19  # a serial never issued


def issue(services: Services, csrs: Any, name: str, *, profile: str = "peer") -> str:
    """A certificate through the enrollment service; returns its PEM."""
    created = services.tokens.create(
        actor="test",
        profiles=[profile],
        names=[name],
        ttl=timedelta(hours=1),
        max_uses=1,
        max_validity_days=None,
    )
    enrolled = services.enrollment.enroll(
        token=created.token, csr_data=csrs.pem_for(name), profile=profile, validity_days=None
    )
    return enrolled.certificate.public_bytes(Encoding.PEM).decode()


def serial_of(pem: str) -> str:
    return format(x509.load_pem_x509_certificate(pem.encode()).serial_number, "x")


class Counting:
    """The FastAPI app behind the fast path, counting the requests that reach it."""

    def __init__(self, services: Services) -> None:
        self.app = create_mtls_app(services, timed=False)
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture
def clients(
    services: Services, admin_pem: str
) -> tuple[Callable[[str], TestClient], Callable[[str], TestClient], Counting]:
    """(fast(pem), slow(pem), the counter of what reached FastAPI behind the fast path)."""
    behind = Counting(services)
    fast_app = RevokeFastPath(behind, services)
    slow_app = create_mtls_app(services)

    def fast(pem: str) -> TestClient:
        return TestClient(TLSScopeApp(fast_app, {"client_cert_chain": [pem]}))

    def slow(pem: str) -> TestClient:
        return TestClient(TLSScopeApp(slow_app, {"client_cert_chain": [pem]}))

    return fast, slow, behind


def same_answer(fast: httpx.Response, slow: httpx.Response, *, swap: tuple[str, str]) -> None:
    """Status, headers and body equal, once the fast answer's serial is the slow one's."""
    fast_body = fast.content.replace(swap[0].encode(), swap[1].encode())
    assert (fast.status_code, fast_body) == (slow.status_code, slow.content), (
        f"fast: {fast.status_code} {fast.text}\nslow: {slow.status_code} {slow.text}"
    )
    fast_headers = {k: v for k, v in fast.headers.items() if k != "content-length"}
    slow_headers = {k: v for k, v in slow.headers.items() if k != "content-length"}
    assert fast_headers == slow_headers
    assert int(fast.headers["content-length"]) == len(fast.content)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reason": "keyCompromise"}, id="keyCompromise"),
        pytest.param({"reason": "unspecified"}, id="unspecified"),
        pytest.param({"reason": "certificateHold"}, id="hold"),
        pytest.param(
            {"reason": "superseded", "invalidity_date": "2020-01-01T00:00:00+02:00"},
            id="invalidity date with an offset",
        ),
    ],
)
def test_answers_like_the_route(
    body: dict[str, Any], clients: Any, services: Services, csrs: Any, admin_pem: str
) -> None:
    fast, slow, behind = clients
    one, two = (serial_of(issue(services, csrs, "same.zone")) for _ in range(2))

    answered = fast(admin_pem).post(f"/admin/certificates/{one}/revoke", json=body)
    expected = slow(admin_pem).post(f"/admin/certificates/{two}/revoke", json=body)

    assert answered.status_code == 200, answered.text
    assert behind.calls == 0, "the fast path answered itself"
    same_answer(answered, expected, swap=(one, two))
    with services.db.read() as session:
        audited = session.execute(
            text("SELECT target FROM audit_log WHERE action = 'certificate.revoke' ORDER BY id")
        ).all()
    assert [row.target for row in audited] == [one, two]


REFUSED_ON_THE_FAST_PATH = [
    pytest.param("revoked", {"reason": "keyCompromise"}, 409, id="409 already revoked"),
    pytest.param("never", {"reason": "keyCompromise"}, 404, id="404 never issued"),
    pytest.param("not hex", {"reason": "keyCompromise"}, 400, id="400 not a serial"),
    pytest.param("good", {"reason": "bogus"}, 400, id="400 unknown reason"),
    pytest.param("good", {"reason": "removeFromCRL"}, 400, id="400 removeFromCRL"),
    pytest.param(
        "good",
        {"reason": "keyCompromise", "invalidity_date": "2999-01-01T00:00:00Z"},
        400,
        id="400 invalidity date in the future",
    ),
]


@pytest.mark.parametrize(("target", "body", "status"), REFUSED_ON_THE_FAST_PATH)
def test_refuses_like_the_route(
    target: str,
    body: dict[str, Any],
    status: int,
    clients: Any,
    services: Services,
    csrs: Any,
    admin_pem: str,
) -> None:
    fast, slow, behind = clients
    serial = {
        "never": NEVER,
        "not hex": "zz-not-hex",
        "good": serial_of(issue(services, csrs, "g.zone")),
    }.get(target)
    if serial is None:
        serial = serial_of(issue(services, csrs, "r.zone"))
        assert services.revocation.revoke(
            serial, reason="superseded", invalidity_date=None, actor="test"
        )

    answered = fast(admin_pem).post(f"/admin/certificates/{serial}/revoke", json=body)
    expected = slow(admin_pem).post(f"/admin/certificates/{serial}/revoke", json=body)

    assert answered.status_code == status, answered.text
    assert behind.calls == 0, "the fast path answered itself"
    same_answer(answered, expected, swap=(serial, serial))


HANDED_TO_THE_ROUTE = [
    pytest.param("auditor", {"json": {"reason": "keyCompromise"}}, 403, id="403 auditor"),
    pytest.param("peer", {"json": {"reason": "keyCompromise"}}, 403, id="403 peer profile"),
    pytest.param(
        "admin",
        {"content": b'{"reason":"keyCompromise"}', "headers": {"content-type": "text/plain"}},
        415,
        id="415 not JSON (CSRF guard)",
    ),
    pytest.param(
        "admin",
        {"content": b'{"reason":', "headers": {"content-type": "application/json"}},
        400,
        id="400 broken JSON",
    ),
    pytest.param("admin", {"json": {"reason": "keyCompromise", "x": 1}}, 400, id="400 extra"),
    pytest.param("admin", {"json": ["keyCompromise"]}, 400, id="400 not an object"),
    pytest.param("admin", {"json": {"reason": 1}}, 400, id="400 reason not a string"),
    pytest.param(
        "admin", {"json": {"reason": "x" * 5000}}, 400, id="400 a body past the fast path's size"
    ),
]


@pytest.mark.parametrize(("who", "request_args", "status"), HANDED_TO_THE_ROUTE)
def test_hands_the_rest_to_the_route(
    who: str,
    request_args: dict[str, Any],
    status: int,
    clients: Any,
    services: Services,
    csrs: Any,
    admin_pem: str,
) -> None:
    fast, slow, behind = clients
    pem = admin_pem if who == "admin" else issue(services, csrs, f"{who}-x", profile=who)
    serial = serial_of(issue(services, csrs, "target.zone"))

    answered = fast(pem).post(f"/admin/certificates/{serial}/revoke", **request_args)
    expected = slow(pem).post(f"/admin/certificates/{serial}/revoke", **request_args)

    assert answered.status_code == status, answered.text
    assert behind.calls == 1, "the route answered"
    same_answer(answered, expected, swap=(serial, serial))
    assert services.certificates.get(serial).revoked_at is None


def test_a_revoked_operator_is_refused_on_its_next_request(
    clients: Any, services: Services, csrs: Any, admin_pem: str
) -> None:
    fast, _slow, behind = clients
    operator_pem = issue(services, csrs, "op", profile="operator")
    operator = fast(operator_pem)
    first = serial_of(issue(services, csrs, "first.zone"))
    done = operator.post(f"/admin/certificates/{first}/revoke", json={"reason": "superseded"})
    assert done.status_code == 200, done.text
    assert operator.get("/admin/cas").status_code == 200
    assert services.peers.cached(operator_pem) is not None, "the operator's check is cached"
    calls = behind.calls

    revoked = fast(admin_pem).post(
        f"/admin/certificates/{serial_of(operator_pem)}/revoke", json={"reason": "keyCompromise"}
    )
    assert revoked.status_code == 200, revoked.text
    second = serial_of(issue(services, csrs, "second.zone"))
    refused = operator.post(f"/admin/certificates/{second}/revoke", json={"reason": "superseded"})

    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("peer-rejected"), refused.text
    assert behind.calls == calls + 1, "the route said why"
    assert services.certificates.get(second).revoked_at is None


def test_a_status_change_elsewhere_empties_the_peer_cache(
    clients: Any, services: Services, admin_pem: str
) -> None:
    """Another process's commit bumps the shared generation: the next request asks again."""
    fast, _slow, _behind = clients
    assert fast(admin_pem).get("/admin/cas").status_code == 200
    assert services.peers.cached(admin_pem) is not None

    services.status_signal.bump_local()  # what NOTIFY from another host does

    assert services.peers.cached(admin_pem) is None
    assert fast(admin_pem).get("/admin/cas").status_code == 200  # checked again: still good
    assert services.peers.cached(admin_pem) is not None


def test_no_peer_cache_without_the_shared_generation(
    services: Services, clock: FixedClock, admin_pem: str
) -> None:
    """A process that could not map the status-generation file would not see another worker's
    revocation: it asks the database every time."""
    peers = PeerService(services.db, clock, signal=StatusSignal(None))

    assert peers.authenticate_pem(admin_pem).profile == "admin"
    assert peers.cached(admin_pem) is None
