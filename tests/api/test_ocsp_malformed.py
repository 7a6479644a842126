"""OCSP requests that cannot be answered get an OCSP `malformedRequest`, never an HTTP 5xx.

RFC 6960 §2.3 / §4.2.1: the responder answers with an unsigned OCSPResponse carrying only
`malformedRequest` (1); SPEC: bad input never yields a 500. In-process public app, table-driven
over POST bodies and GET paths.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient

from app.api.apps import create_public_app, create_public_asgi
from app.services.container import Services

pytestmark = pytest.mark.db

# RFC 6960 §4.2.1: OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED malformedRequest (1) }
MALFORMED_DER = bytes.fromhex("3003 0a01 01")
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"
MAX_BODY = 64 * 1024


@pytest.fixture(
    params=[
        pytest.param(create_public_app, id="app"),
        pytest.param(create_public_asgi, id="behind the fast path"),
    ]
)
def client(services: Services, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with TestClient(request.param(services)) as test_client:
        yield test_client


@pytest.fixture
def issuer_hashes(services: Services) -> tuple[bytes, bytes]:
    """SHA-1 issuerNameHash and issuerKeyHash of the active issuing CA (RFC 6960 §4.1.1)."""
    der = services.keyring.active_issuer().certificate.public_bytes(Encoding.DER)
    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    key_bits = tbs["subject_public_key_info"]["public_key"].contents[1:]
    return (
        hashlib.sha1(tbs["subject"].dump(), usedforsecurity=False).digest(),
        hashlib.sha1(key_bits, usedforsecurity=False).digest(),
    )


def cert_id(hashes: tuple[bytes, bytes], **changes: Any) -> dict[str, Any]:
    name_hash, key_hash = hashes
    fields: dict[str, Any] = {
        "hash_algorithm": {"algorithm": "sha1"},
        "issuer_name_hash": name_hash,
        "issuer_key_hash": key_hash,
        "serial_number": int.from_bytes(os.urandom(19), "big") | 1,
    }
    return {**fields, **changes}


def extension(oid: str, value: bytes, *, critical: bool = False) -> dict[str, Any]:
    return {
        "extn_id": oid,
        "critical": critical,
        "extn_value": asn1_core.ParsableOctetString(value),
    }


def build_request(
    hashes: tuple[bytes, bytes],
    *,
    version: str | int = "v1",
    cert_ids: list[dict[str, Any]] | None = None,
    extensions: list[dict[str, Any]] | None = None,
) -> bytes:
    """An OCSPRequest from parts, so one part at a time can be wrong."""
    tbs: dict[str, Any] = {
        "version": version,
        "request_list": [
            {"req_cert": c} for c in (cert_ids if cert_ids is not None else [cert_id(hashes)])
        ],
    }
    if extensions:
        tbs["request_extensions"] = extensions
    der: bytes = asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()
    return der


def nonce(size: int) -> bytes:
    der: bytes = asn1_core.OctetString(os.urandom(size)).dump()
    return der


# Each case makes a request body from the issuer's hashes; the well-formed base is `valid`.
Body = Callable[[tuple[bytes, bytes]], bytes]


def valid(hashes: tuple[bytes, bytes]) -> bytes:
    return build_request(hashes)


POST_CASES = [
    pytest.param(lambda h: b"not an OCSP request", id="garbage"),
    pytest.param(lambda h: b"", id="empty body"),
    pytest.param(lambda h: b"\x00", id="one zero octet"),
    pytest.param(lambda h: valid(h)[:-7], id="truncated valid request"),
    pytest.param(lambda h: valid(h)[:2], id="only the outer tag and length"),
    pytest.param(lambda h: valid(h) + b"\x00", id="trailing octet after a valid request"),
    pytest.param(lambda h: bytes.fromhex("3003020100"), id="SEQUENCE of an INTEGER"),
    pytest.param(lambda h: bytes.fromhex("30847fffffff"), id="length of 2 GiB"),
    pytest.param(lambda h: bytes.fromhex("3080") * 4000, id="indefinite lengths nested deep"),
    pytest.param(lambda h: base64.b64encode(valid(h)), id="base64 in a POST body"),
    pytest.param(lambda h: build_request(h, version=1), id="version 2"),
    pytest.param(lambda h: build_request(h, cert_ids=[]), id="empty requestList"),
    pytest.param(
        lambda h: build_request(h, cert_ids=[cert_id(h, hash_algorithm={"algorithm": "md5"})]),
        id="MD5 CertID",
    ),
    pytest.param(
        lambda h: build_request(h, cert_ids=[cert_id(h, issuer_name_hash=b"\x01" * 19)]),
        id="hash of the wrong length",
    ),
    pytest.param(
        lambda h: build_request(h, extensions=[extension("1.2.3.4", b"\x05\x00", critical=True)]),
        id="unknown critical extension",
    ),
    pytest.param(
        lambda h: build_request(h, extensions=[extension(NONCE_OID, nonce(0))]),
        id="empty nonce",
    ),
    pytest.param(
        lambda h: build_request(h, extensions=[extension(NONCE_OID, nonce(129))]),
        id="nonce of 129 octets",
    ),
    pytest.param(
        lambda h: build_request(
            h, extensions=[extension(NONCE_OID, nonce(16)), extension(NONCE_OID, nonce(16))]
        ),
        id="nonce twice",
    ),
]


def assert_malformed(answer: Any) -> None:
    described = f"HTTP {answer.status_code} {answer.headers} {answer.content[:200]!r}"
    assert answer.status_code == 200, described
    assert answer.headers["content-type"] == "application/ocsp-response", described
    assert answer.content == MALFORMED_DER, described
    parsed = ocsp.load_der_ocsp_response(answer.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST, described


def test_the_well_formed_base_request_is_answered(
    client: TestClient, issuer_hashes: tuple[bytes, bytes]
) -> None:
    """The control for the tables: unchanged, the base request gets a signed answer."""
    request_der = valid(issuer_hashes)

    posted = client.post(
        "/ocsp", content=request_der, headers={"Content-Type": "application/ocsp-request"}
    )
    got = client.get("/ocsp/" + quote(base64.b64encode(request_der).decode(), safe=""))

    for answer in (posted, got):
        assert answer.status_code == 200, answer.content
        parsed = ocsp.load_der_ocsp_response(answer.content)
        assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.content
        assert parsed.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.parametrize("body", POST_CASES)
def test_malformed_post(client: TestClient, issuer_hashes: tuple[bytes, bytes], body: Body) -> None:
    answer = client.post(
        "/ocsp", content=body(issuer_hashes), headers={"Content-Type": "application/ocsp-request"}
    )

    assert_malformed(answer)


@pytest.mark.parametrize("body", POST_CASES)
def test_malformed_get(client: TestClient, issuer_hashes: tuple[bytes, bytes], body: Body) -> None:
    """The same bad requests, base64 and URL-encoded in a GET (RFC 6960 §A.1)."""
    encoded = quote(base64.b64encode(body(issuer_hashes)).decode(), safe="")

    assert_malformed(client.get(f"/ocsp/{encoded}"))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/ocsp/", id="empty"),
        pytest.param("/ocsp/!!!!", id="not base64"),
        pytest.param("/ocsp/MFQw$$$$", id="base64 with foreign characters"),
        pytest.param("/ocsp/MFQwUjBQ-_", id="base64url alphabet"),
        pytest.param("/ocsp/A", id="impossible base64 length"),
        pytest.param("/ocsp/%00%ff%fe", id="url-encoded binary"),
        pytest.param("/ocsp/%C3%A4%C3%B6%C3%BC", id="url-encoded non-ASCII"),
        pytest.param("/ocsp/%25%25%25zz", id="url-encoded percent signs"),
        pytest.param("/ocsp/%2F%2F%2F%2F", id="url-encoded slashes"),
        pytest.param("/ocsp/" + "A" * 8000, id="8000 characters of zeros"),
        pytest.param("/ocsp/" + quote(base64.b64encode(b"garbage").decode()), id="base64 garbage"),
        pytest.param("/ocsp/MFQw/UjBQ/MA==/extra", id="slashes splitting garbage"),
    ],
)
def test_malformed_get_path(client: TestClient, path: str) -> None:
    assert_malformed(client.get(path))


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = min(size, total - sent)
        sent += chunk
        yield b"\x30" * chunk


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: b"\x30" * (MAX_BODY + 1), id="Content-Length over 64 KiB"),
        pytest.param(lambda: b"\x30\x83\x01\x00\x01" + b"\x00" * MAX_BODY, id="DER over 64 KiB"),
        pytest.param(lambda: _chunks(MAX_BODY + 1), id="chunked over 64 KiB"),
        pytest.param(lambda: _chunks(4 * 1024 * 1024), id="chunked 4 MiB"),
    ],
)
def test_oversize_post(client: TestClient, content: Callable[[], Any]) -> None:
    answer = client.post(
        "/ocsp", content=content(), headers={"Content-Type": "application/ocsp-request"}
    )

    assert_malformed(answer)
