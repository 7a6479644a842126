"""The enrollment fast path (app.api.enroll_fast) answers as the FastAPI route does: for a table
of good and bad requests, the public listener's whole stack (fast path in front) and the route
alone give the same status, the same headers, the same problem document byte for byte, and for
a 201 a certificate with the same contents (all but serial and signature). Each row also says
which requests the fast path must answer itself and which it must hand on."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.apps import create_public_app, create_public_asgi
from app.api.enroll_fast import EnrollFastPath, parse_plain_request
from app.api.ratelimit import EnrollmentLimiter
from app.clock import FixedClock
from app.services.container import Services

pytestmark = pytest.mark.db

LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("192.0.2.7", 50000)  # not loopback: plain HTTP with a token is refused
PKCS10 = "application/pkcs10"
TOKEN: dict[str, Any] = {
    "names": ["*.zone"],
    "profile": "server",
    "max_validity_days": 30,
    "max_uses": 2,
}


class CountingApp:
    """The app behind the fast path, counting the requests handed to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@dataclass
class Side:
    """One way in: a client, the token made for it, and what reached the FastAPI app."""

    client: TestClient
    token: str
    behind: CountingApp | None = None

    def post(self, content: bytes, content_type: str | None, *, auth: str | None = None) -> Any:
        headers = {"Authorization": auth if auth is not None else f"Bearer {self.token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.client.post("/v1/certificates", content=content, headers=headers)


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


@dataclass(frozen=True)
class Case:
    status: int
    send: Callable[[Side, str], httpx.Response]  # (side, the row's CSR PEM)
    fast: bool  # answered by the fast path itself (else handed on to the route)
    token: dict[str, Any] = field(default_factory=dict)  # overrides of TOKEN
    warm: bool = True  # the token's grant is cached (the route looked it up before)
    client: tuple[str, int] = LOOPBACK
    https: bool = False  # the request came over TLS (the scope's scheme)
    burst: int | None = None  # a rate limit of this burst per address and token
    spend_first: bool = False  # one good enrollment first (then the same send is compared)


def body(**fields: Any) -> Callable[[Side, str], httpx.Response]:
    """A JSON body with the row's CSR under "csr" unless `fields` sets it."""

    def send(side: Side, csr: str) -> httpx.Response:
        document = {"csr": csr, **fields}
        return side.post(as_json(document), "application/json")

    return send


def raw(content: bytes | Callable[[str], bytes], content_type: str | None, **kw: Any) -> Any:
    def send(side: Side, csr: str) -> httpx.Response:
        data = content(csr) if callable(content) else content
        return side.post(data, content_type, **kw)

    return send


def with_auth(authorization: str) -> Callable[[Side, str], httpx.Response]:
    return raw(lambda c: as_json({"csr": c}), "application/json", auth=authorization)


def flipped(csr: str) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte
    return as_json({"csr": x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM).decode()})


CASES = [
    # What the fast path answers itself.
    pytest.param(Case(201, body(), fast=True), id="fast/201 plain"),
    pytest.param(
        Case(201, body(profile="server", validity_days=7), fast=True), id="fast/201 all fields"
    ),
    pytest.param(Case(201, body(profile=None, validity_days=None), fast=True), id="fast/201 nulls"),
    pytest.param(
        Case(201, raw(lambda c: as_json({"csr": c}), "application/json; charset=utf-8"), fast=True),
        id="fast/201 charset parameter",
    ),
    pytest.param(
        Case(201, body(), fast=True, client=ELSEWHERE, https=True), id="fast/201 TLS from elsewhere"
    ),
    pytest.param(Case(400, body(validity_days=31), fast=True), id="fast/400 validity over token"),
    pytest.param(Case(400, body(validity_days=0), fast=True), id="fast/400 validity zero"),
    pytest.param(Case(400, body(profile="client"), fast=True), id="fast/400 profile not allowed"),
    pytest.param(Case(400, body(profile="nope"), fast=True), id="fast/400 unknown profile"),
    pytest.param(Case(400, body(csr="not a csr"), fast=True), id="fast/400 not PEM"),
    pytest.param(Case(400, raw(flipped, "application/json"), fast=True), id="fast/400 bad sig"),
    pytest.param(Case(403, body(), fast=True, token={"names": ["other.zone"]}), id="fast/403 name"),
    pytest.param(
        Case(401, body(), fast=True, token={"max_uses": 1}, spend_first=True),
        id="fast/401 used up",
    ),
    pytest.param(
        Case(429, body(), fast=True, burst=1, spend_first=True), id="fast/429 rate limited"
    ),
    # What it hands on to the route, untouched.
    pytest.param(Case(201, body(), fast=False, warm=False), id="route/201 token not cached"),
    pytest.param(Case(201, raw(lambda c: c.encode(), PKCS10), fast=False), id="route/201 pkcs10"),
    pytest.param(
        Case(201, body(validity_days="7"), fast=False), id="route/201 validity as a string"
    ),
    pytest.param(Case(400, body(extra=1), fast=False), id="route/400 unknown field"),
    pytest.param(Case(400, body(csr=None), fast=False), id="route/400 csr null"),
    pytest.param(Case(201, body(validity_days=True), fast=False), id="route/201 validity true"),
    pytest.param(Case(400, raw(b"{", "application/json"), fast=False), id="route/400 bad JSON"),
    pytest.param(Case(400, raw(b"[]", "application/json"), fast=False), id="route/400 array"),
    pytest.param(
        Case(400, raw(b'{"csr": NaN}', "application/json"), fast=False), id="route/400 NaN"
    ),
    pytest.param(
        Case(400, raw(b'\xef\xbb\xbf{"csr": "x"}', "application/json"), fast=False),
        id="route/400 BOM",
    ),
    pytest.param(
        Case(
            201,
            raw(
                lambda c: b'{"csr": "x", "csr": ' + json.dumps(c).encode() + b"}",
                "application/json",
            ),
            fast=False,
        ),
        id="route/201 duplicate key, the last counts",
    ),
    pytest.param(
        Case(413, raw(as_json({"csr": "x" * 70_000}), "application/json"), fast=False),
        id="route/413 too large",
    ),
    pytest.param(Case(415, raw(b"{}", "text/plain"), fast=False), id="route/415 text"),
    pytest.param(Case(415, raw(b"{}", None), fast=False), id="route/415 no content type"),
    pytest.param(Case(401, with_auth(""), fast=False), id="route/401 no token"),
    pytest.param(Case(401, with_auth("Basic eDp5"), fast=False), id="route/401 basic"),
    pytest.param(Case(401, with_auth("Bearer mintca_unknown"), fast=False), id="route/401 unknown"),
    pytest.param(Case(403, body(), fast=False, client=ELSEWHERE), id="route/403 tls required"),
]


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    """What must match between the two paths: status, headers and body — for a 201 the body
    without serial and certificate, and headers without content-length (serials and
    signatures differ in length), which `same_certificate` compares instead."""
    headers = sorted(response.headers.multi_items())
    if response.status_code != 201:
        return response.status_code, headers, response.content
    document = response.json() if response.headers["content-type"] == "application/json" else {}
    for member in ("serial", "certificate"):
        document.pop(member, None)
    return 201, [(k, v) for k, v in headers if k != "content-length"], document


def leaf(response: httpx.Response) -> x509.Certificate:
    if response.headers["content-type"] == "application/json":
        return x509.load_pem_x509_certificate(response.json()["certificate"].encode())
    return x509.load_pem_x509_certificates(response.content)[0]


def contents(certificate: x509.Certificate) -> tuple[Any, ...]:
    """Everything a certificate says except its serial and signature."""
    public_key = certificate.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    return (
        certificate.subject,
        certificate.issuer,
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
        public_key,
        certificate.signature_algorithm_oid,
        [(e.oid, e.critical, e.value) for e in certificate.extensions],
    )


@pytest.fixture
def insecure_loopback(services: Services) -> Services:
    services.settings = services.settings.model_copy(update={"allow_insecure_tokens": True})
    return services


def make_side(
    services: Services, new_token: Callable[..., dict[str, Any]], case: Case, *, fast: bool
) -> Iterator[Side]:
    token = new_token(**{**TOKEN, **case.token})
    if case.warm:
        services.tokens.authenticate(token["token"])  # what the route's lookup leaves behind
    behind: CountingApp | None = None
    if fast:
        app = create_public_asgi(services)
        fast_path = app.app  # type: ignore[attr-defined]  # RequestMetrics(EnrollFastPath(...))
        assert isinstance(fast_path, EnrollFastPath), "the public listener has no fast path"
        behind = fast_path.app = CountingApp(fast_path.app)
        limiter = fast_path.answers.limiter
    else:
        app = create_public_app(services)
        limiter = app.state.enroll_limiter = EnrollmentLimiter(services.settings)
    if case.burst is not None:
        limited = services.settings.model_copy(
            update={
                "enroll_burst_per_address": case.burst,
                "enroll_burst_per_token": case.burst,
                "enroll_rate_per_address": 0.01,  # one more in 100 s: Retry-After is stable
                "enroll_rate_per_token": 0.01,
            }
        )
        limiter.__init__(limited)  # type: ignore[misc]  # same object, shared by both layers
    base_url = "https://testserver" if case.https else "http://testserver"
    with TestClient(app, base_url=base_url, client=case.client) as client:
        yield Side(client, token["token"], behind)


@pytest.mark.parametrize("case", CASES)
def test_fast_path_answers_as_the_route(
    case: Case,
    insecure_loopback: Services,
    new_token: Callable[..., dict[str, Any]],
    clock: FixedClock,
    csrs: Any,
) -> None:
    services = insecure_loopback
    csr = csrs.pem_for("a.zone", key=csrs.new_key("ec-p256"))
    answers = []
    for fast in (False, True):
        for side in make_side(services, new_token, case, fast=fast):
            if case.spend_first:
                first = body()(side, csrs.pem_for("b.zone"))
                assert first.status_code == 201, first.text
                if side.behind is not None:
                    side.behind.calls = 0
            answers.append(case.send(side, csr))
            if side.behind is not None:
                handed_on = side.behind.calls
    route, fast_answer = answers
    assert route.status_code == case.status, route.text
    assert comparable(fast_answer) == comparable(route), f"{fast_answer.text}\n{route.text}"
    if case.status == 201:
        assert contents(leaf(fast_answer)) == contents(leaf(route))
    assert handed_on == (0 if case.fast else 1), f"handed on {handed_on} times"


@pytest.mark.parametrize(
    ("content", "plain"),
    [
        pytest.param(b'{"csr": "x"}', True, id="csr only"),
        pytest.param(b'{"csr": "x", "profile": "peer", "validity_days": 3}', True, id="all"),
        pytest.param(b'{"csr": "x", "validity_days": 3.0}', False, id="float days"),
        pytest.param(b'{"csr": "x", "validity_days": 99999999999}', False, id="huge days"),
        pytest.param(b'{"csr": "\\ud800"}', False, id="lone surrogate"),
        pytest.param('{"csr": "é"}'.encode(), False, id="non-ASCII csr"),
        pytest.param(b'{"csr": "x", "profile": 3}', False, id="profile number"),
        pytest.param(b'{"csr": "x"} x', False, id="trailing garbage"),
        pytest.param(b'{"csr": Infinity}', False, id="Infinity"),
        pytest.param(b"\xff", False, id="not UTF-8"),
        pytest.param(b"[" * 100_000, False, id="deep nesting"),
    ],
)
def test_plain_request_shape(content: bytes, plain: bool) -> None:
    """Only bodies whose reading cannot differ between json and pydantic are taken."""
    assert (parse_plain_request(content) is not None) is plain
