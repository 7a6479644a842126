"""Enrollment tokens need TLS (issue 12, item 9), and enrollment is rate-limited per client
address and per token with 429 and Retry-After. In-process: the scope's scheme and client
address are what uvicorn would put there for a TLS or plain connection from that address."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.apps import create_public_app
from app.api.ratelimit import TokenBucket
from app.api.routes.public.certificates import is_loopback
from app.cli.client import default_public_url
from app.config import Settings
from app.services.container import Services
from tests.helpers import csr_pem

pytestmark = pytest.mark.db

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_from(services: Services) -> Iterator[ClientFactory]:
    """`client_from(host, tls=..., **settings)`: a client of one public app (one process's
    limiter) whose connections come from `host`, over TLS or plain HTTP, with these settings
    changed (limits are read when the first enrollment arrives)."""
    app = create_public_app(services)
    with ExitStack() as stack:

        def make(host: str, *, tls: bool = False, **changes: Any) -> TestClient:
            services.settings = services.settings.model_copy(update=changes)
            base_url = "https://testserver" if tls else "http://testserver"
            return stack.enter_context(TestClient(app, base_url=base_url, client=(host, 4)))

        yield make


def _enroll(client: TestClient, token: str, name: str = "a.zone") -> Any:
    return client.post(
        "/v1/certificates",
        json={"csr": csr_pem(name)},
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize(
    ("host", "tls", "flag", "status"),
    [
        pytest.param("203.0.113.7", False, False, 403, id="refused/plain, remote, flag off"),
        pytest.param("203.0.113.7", False, True, 403, id="refused/plain, remote, flag on"),
        pytest.param("127.0.0.1", False, False, 403, id="refused/plain, loopback, flag off"),
        pytest.param("10.0.0.1", False, True, 403, id="refused/plain, private address, flag on"),
        pytest.param("testclient", False, True, 403, id="refused/plain, a name, flag on"),
        pytest.param("127.0.0.1", False, True, 201, id="allowed/plain, loopback, flag on"),
        pytest.param("127.8.9.10", False, True, 201, id="allowed/plain, 127/8, flag on"),
        pytest.param("::1", False, True, 201, id="allowed/plain, ::1, flag on"),
        pytest.param("203.0.113.7", True, False, 201, id="allowed/tls, remote, flag off"),
    ],
)
def test_tokens_need_tls_unless_loopback_with_the_flag(
    host: str,
    tls: bool,
    flag: bool,
    status: int,
    client_from: ClientFactory,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    token = new_token(["a.zone"], profile="server")
    response = _enroll(client_from(host, tls=tls, allow_insecure_tokens=flag), token["token"])
    if status == 201:
        assert response.status_code == 201, response.text
    else:
        problem(response, 403, "tls-required")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("::2", False),
        ("localhost", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_enroll_default_url_follows_public_tls() -> None:
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    tls = Settings(public_tls=True, _env_file=None)  # type: ignore[call-arg]
    assert default_public_url(plain) == "http://localhost:8080"
    assert default_public_url(tls) == "https://localhost:8080"


def test_rate_limit_per_address_answers_429_with_retry_after(
    client_from: ClientFactory,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    client = client_from(
        "203.0.113.9", tls=True, enroll_rate_per_address=0.01, enroll_burst_per_address=2
    )
    token = new_token(["*.zone"], profile="server", max_uses=10)["token"]
    assert _enroll(client, token, "a.zone").status_code == 201
    assert _enroll(client, token, "b.zone").status_code == 201
    refused = _enroll(client, token, "c.zone")
    body = problem(refused, 429, "rate-limited")
    assert "client address" in body["detail"], body
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 100, refused.headers
    # Another address has its own bucket.
    other = client_from("203.0.113.10", tls=True)
    assert _enroll(other, token, "d.zone").status_code == 201


def test_rate_limit_per_token_spans_addresses(
    client_from: ClientFactory,
    new_token: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    first = client_from(
        "203.0.113.20", tls=True, enroll_rate_per_token=0.01, enroll_burst_per_token=1
    )
    second = client_from("203.0.113.21", tls=True)
    token = new_token(["*.zone"], profile="server", max_uses=10)["token"]
    other_token = new_token(["*.zone"], profile="server")["token"]
    assert _enroll(first, token, "a.zone").status_code == 201
    refused = _enroll(second, token, "b.zone")
    body = problem(refused, 429, "rate-limited")
    assert "token" in body["detail"], body
    assert "Retry-After" in refused.headers
    assert _enroll(second, other_token, "c.zone").status_code == 201, "another token is free"


def test_default_limits_do_not_throttle_a_burst_of_enrollments(
    client_from: ClientFactory, new_token: Callable[..., dict[str, Any]]
) -> None:
    client = client_from("127.0.0.1", allow_insecure_tokens=True)
    token = new_token(["*.zone"], profile="server", max_uses=50)["token"]
    statuses = [_enroll(client, token, f"n{n}.zone").status_code for n in range(50)]
    assert statuses == [201] * 50, statuses


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take("k") == 0.0
    assert bucket.take("k") > 0
    now[0] += 100
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0], "never above the burst"
    assert bucket.take("k") > 0
