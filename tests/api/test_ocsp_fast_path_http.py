"""The OCSP fast path in front of the public app: a repeated nonce-less request (GET or POST)
is answered without the route, with the bytes and headers the route sends for it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient

from app.api.apps import create_public_app, create_public_asgi
from app.api.limits import MAX_BODY_BYTES
from app.api.ocsp_http import response_headers
from app.services.container import Services
from app.services.ocsp import OCSPAnswer
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db


@pytest.fixture
def request_der(services: Services) -> bytes:
    leaf = enroll_via_services(services).certificate
    issuer = services.keyring.active_issuer().certificate
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    return builder.build().public_bytes(Encoding.DER)


@pytest.fixture
def full_path_calls(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The requests that reached the route (OCSPService.respond)."""
    calls: list[bytes] = []
    respond = services.ocsp.respond

    def counted(der: bytes) -> OCSPAnswer:
        calls.append(der)
        return respond(der)

    monkeypatch.setattr(services.ocsp, "respond", counted)
    return calls


@pytest.fixture
def fast(services: Services) -> Iterator[TestClient]:
    with TestClient(create_public_asgi(services)) as client:
        yield client


@pytest.fixture
def slow(services: Services) -> Iterator[TestClient]:
    with TestClient(create_public_app(services)) as client:
        yield client


def get_path(der: bytes) -> str:
    return "/ocsp/" + quote(base64.b64encode(der).decode(), safe="")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_repeated_request_skips_the_route_and_gets_the_same_bytes_and_headers(
    fast: TestClient,
    slow: TestClient,
    request_der: bytes,
    full_path_calls: list[bytes],
    method: str,
) -> None:
    def ask(client: TestClient) -> tuple[bytes, list[tuple[str, str]]]:
        if method == "GET":
            answer = client.get(get_path(request_der))
        else:
            answer = client.post(
                "/ocsp", content=request_der, headers={"Content-Type": "application/ocsp-request"}
            )
        assert answer.status_code == 200, answer.text
        return answer.content, list(answer.headers.multi_items())

    first = ask(fast)
    assert len(full_path_calls) == 1, "the first request is answered by the route"
    hit = ask(fast)
    assert len(full_path_calls) == 1, "the repeated request went through the route"
    through_route = ask(slow)

    assert hit == first
    assert hit == through_route, "the fast path and the route differ"
    status = ocsp.load_der_ocsp_response(hit[0])
    assert status.certificate_status == ocsp.OCSPCertStatus.GOOD
    names = [name for name, _ in hit[1]]
    if method == "GET":  # RFC 5019 §6: caching headers on GET answers only
        assert names == [
            "cache-control",
            "etag",
            "last-modified",
            "expires",
            "content-length",
            "content-type",
        ], names
    else:
        assert names == ["content-length", "content-type"], names


def test_a_nonce_request_gets_its_own_signature_on_the_fast_path(
    fast: TestClient, services: Services, request_der: bytes, full_path_calls: list[bytes]
) -> None:
    assert fast.get(get_path(request_der)).status_code == 200  # pre-signs the statuses
    parsed = ocsp.load_der_ocsp_request(request_der)
    answers = []
    for nonce in (b"first nonce", b"second nonce"):
        with_nonce = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(
                parsed.issuer_name_hash,
                parsed.issuer_key_hash,
                parsed.serial_number,
                hashes.SHA1(),
            )
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
            .public_bytes(Encoding.DER)
        )
        answer = fast.post(
            "/ocsp", content=with_nonce, headers={"Content-Type": "application/ocsp-request"}
        )
        response = ocsp.load_der_ocsp_response(answer.content)
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        assert "cache-control" not in answer.headers, "a nonce answer is not for caches"
        answers.append(answer.content)
    assert len(full_path_calls) == 1, "nonce requests for pre-signed statuses skip the route"
    assert answers[0] != answers[1]


def test_a_body_over_the_limit_is_malformed_behind_the_fast_path(fast: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to refuse it early
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b"\x30" * 1024

    answer = fast.post("/ocsp", content=chunks())
    assert answer.status_code == 200, answer.text
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(
    ("seconds_left", "max_age"),
    [
        pytest.param(12 * 3600, 300, id="hours left: 300 s"),
        pytest.param(120, 120, id="2 minutes left: 120 s"),
        pytest.param(-5, 0, id="past nextUpdate: 0"),
    ],
)
def test_max_age_never_passes_next_update(seconds_left: int, max_age: int) -> None:
    """RFC 5019 §6.2: caches may keep an answer until nextUpdate, MintCA says at most 300 s."""
    this_update = datetime(2026, 1, 1, tzinfo=UTC)
    next_update = this_update + timedelta(hours=12)
    answer = OCSPAnswer(b"\x30\x03\x0a\x01\x00", this_update, next_update, cacheable=True)
    now = next_update - timedelta(seconds=seconds_left)
    for _ in range(2):  # the second time from the header cache
        headers = dict(response_headers(answer, now=now))
        assert headers[b"cache-control"] == (
            b"public, max-age=%d, no-transform, must-revalidate" % max_age
        )
        assert headers[b"expires"] == b"Thu, 01 Jan 2026 12:00:00 GMT"
