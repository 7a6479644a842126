"""OCSP requests with a nonce against a live `mintca serve`, over real sockets: every answer is
signed afresh and echoes its own nonce (checked by `openssl ocsp -url` and cryptography), fast
answers read like the route's apart from producedAt, nonce and signature, unusual requests are
answered correctly by the full path, and no worker answers "good" with a nonce after a
revocation's 200."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from app.config import Settings
from tests.integration.live import LiveServer, start_server, stop_server
from tests.integration.test_ocsp_cache_processes import change, enroll

pytestmark = [pytest.mark.db, pytest.mark.slow]

NONCE_OID = bytes.fromhex("06092b0601050507300102")
FRESH_CONNECTIONS = 24  # per check: with two workers, one missed by all has odds 2^-23


@pytest.fixture
def server(initialised_settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    process, live = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        yield live
    finally:
        stop_server(process)


def tlv(tag: int, contents: bytes) -> bytes:
    if len(contents) < 0x80:
        return bytes((tag, len(contents))) + contents
    length = len(contents).to_bytes((len(contents).bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + contents


def nonce_extension(nonce: bytes, *, critical: bool = False) -> bytes:
    """An Extension carrying the nonce as clients send it (RFC 9654 §2.1)."""
    flag = b"\x01\x01\xff" if critical else b""
    return tlv(0x30, NONCE_OID + flag + tlv(0x04, tlv(0x04, nonce)))


def request_der(leaves: list[tuple[x509.Certificate, x509.Certificate]], **tbs: Any) -> bytes:
    """An OCSPRequest for these (leaf, issuer) CertIDs, with `tbs` fields added by hand:
    extensions (list of Extension DER), requestor (GeneralName DER), signed (bool)."""
    request_list = b""
    for leaf, issuer in leaves:
        plain = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        parsed = asn1_ocsp.OCSPRequest.load(plain.public_bytes(serialization.Encoding.DER))
        request_list += parsed["tbs_request"]["request_list"][0].dump()
    fields = b""
    if "requestor" in tbs:
        fields += tlv(0xA1, tbs["requestor"])
    fields += tlv(0x30, request_list)
    if tbs.get("extensions"):
        fields += tlv(0xA2, tlv(0x30, b"".join(tbs["extensions"])))
    body = tlv(0x30, fields)
    if tbs.get("signed"):
        algorithm = tlv(0x30, bytes.fromhex("06082a8648ce3d040302"))  # ecdsa-with-SHA256
        body += tlv(0xA0, tlv(0x30, algorithm + tlv(0x03, b"\x00" + b"\x30\x00")))
    return tlv(0x30, body)


def ask(server: LiveServer, der: bytes) -> ocsp.OCSPResponse:
    """POST on a fresh connection; the answer must be successful and correctly signed."""
    answer = httpx.post(
        server.public_url + "/ocsp",
        content=der,
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    response = ocsp.load_der_ocsp_response(answer.content)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, answer.content.hex()
    responder = response.certificates[0]
    public_key = responder.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    return response


def nonce_of(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def statuses(response: ocsp.OCSPResponse) -> list[tuple[int, str]]:
    return [(single.serial_number, single.certificate_status.name) for single in response.responses]


def without_nonce_and_time(response: ocsp.OCSPResponse) -> tuple[Any, ...]:
    """What a nonce answer shares with any other answer to the same CertIDs: all but
    producedAt, the nonce and the signature, and thisUpdate (each worker pre-signs its own)."""
    for single in response.responses:
        assert single.this_update_utc <= response.produced_at_utc
    return (
        response.responder_key_hash,
        [
            (s.serial_number, s.certificate_status, s.next_update_utc - s.this_update_utc)
            for s in response.responses
        ],
        response.certificates,
        response.signature_algorithm_oid,
    )


def test_nonce_answers_are_fresh_and_read_like_the_routes(
    server: LiveServer, tmp_path: Path
) -> None:
    serial, leaf, issuing = enroll(server)
    issuing_pem = tmp_path / "issuing.pem"
    issuing_pem.write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))

    # The first nonce request for this CertID is answered by the route (nothing cached);
    # it pre-signs the statuses, so the next ones are answered from the fast path.
    first = ask(server, request_der([(leaf, issuing)], extensions=[nonce_extension(b"n" * 16)]))
    later = [
        ask(server, request_der([(leaf, issuing)], extensions=[nonce_extension(nonce)]))
        for nonce in (b"a" * 16, b"b" * 16, b"c" * 17, b"d")  # odd lengths too
    ]
    assert [nonce_of(r) for r in [first, *later]] == [
        b"n" * 16,
        b"a" * 16,
        b"b" * 16,
        b"c" * 17,
        b"d",
    ]
    signatures = {r.signature for r in [first, *later]}
    assert len(signatures) == 5, "a nonce answer repeated a signature"
    for response in later:
        assert without_nonce_and_time(response) == without_nonce_and_time(first)
        assert statuses(response) == [(leaf.serial_number, "GOOD")]

    # openssl sends its own nonce, checks the echo and verifies the signature chain.
    answers = []
    for n in range(3):
        out = tmp_path / f"answer-{n}.der"
        command = ["openssl", "ocsp", "-issuer", issuing_pem, "-cert", tmp_path / "leaf.pem"]
        command += ["-url", server.public_url + "/ocsp", "-CAfile", server.root_pem]
        checked = subprocess.run(
            [*command, "-respout", out],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        report = checked.stdout + checked.stderr
        assert checked.returncode == 0, report
        assert "Response verify OK" in report, report
        assert "leaf.pem: good" in report, report
        # openssl says "WARNING: no nonce in response" or "Nonce Verify error" otherwise.
        assert "WARNING" not in report, report
        assert "Verify error" not in report, report
        answers.append(out.read_bytes())
    assert len(set(answers)) == 3, "openssl got the same answer twice"
    assert serial


def test_unusual_requests_get_the_full_paths_answer(server: LiveServer) -> None:
    _, leaf_a, issuing = enroll(server)
    _, leaf_b, _ = enroll(server)
    good = "GOOD"
    for pair in ((leaf_a, issuing), (leaf_b, issuing)):  # pre-signed, so shape alone decides
        ask(server, request_der([pair]))
    unknown_extension = tlv(0x30, bytes.fromhex("06032a0304") + tlv(0x04, b"\x05\x00"))
    requestor = tlv(0xA4, tlv(0x30, b""))  # directoryName, an empty Name
    cases: list[tuple[str, bytes, bytes | None, list[tuple[int, str]]]] = [
        (
            "two extensions",
            request_der(
                [(leaf_a, issuing)], extensions=[nonce_extension(b"two"), unknown_extension]
            ),
            b"two",
            [(leaf_a.serial_number, good)],
        ),
        (
            "critical nonce",
            request_der([(leaf_a, issuing)], extensions=[nonce_extension(b"c", critical=True)]),
            b"c",
            [(leaf_a.serial_number, good)],
        ),
        (
            "two CertIDs",
            request_der(
                [(leaf_a, issuing), (leaf_b, issuing)], extensions=[nonce_extension(b"both")]
            ),
            b"both",
            [(leaf_a.serial_number, good), (leaf_b.serial_number, good)],
        ),
        (
            "requestorName",
            request_der(
                [(leaf_a, issuing)], requestor=requestor, extensions=[nonce_extension(b"who")]
            ),
            b"who",
            [(leaf_a.serial_number, good)],
        ),
        (
            "signed request",
            request_der([(leaf_a, issuing)], signed=True, extensions=[nonce_extension(b"sig")]),
            b"sig",
            [(leaf_a.serial_number, good)],
        ),
        (
            "a nonce of 40 octets",
            request_der([(leaf_b, issuing)], extensions=[nonce_extension(b"x" * 40)]),
            b"x" * 40,
            [(leaf_b.serial_number, good)],
        ),
    ]
    for name, der, nonce, expected in cases:
        for _ in range(2):  # the second time too: nothing of these is cached by its bytes
            response = ask(server, der)
            assert nonce_of(response) == nonce, f"{name}: nonce {nonce_of(response)!r}"
            assert statuses(response) == expected, f"{name}: {statuses(response)}"


def test_no_worker_answers_good_with_a_nonce_after_the_revocations_200(
    server: LiveServer,
) -> None:
    serial, leaf, issuing = enroll(server)
    steps = [
        (None, "GOOD"),
        ("certificateHold", "REVOKED"),
        ("keyCompromise", "REVOKED"),
    ]
    counter = 0
    for reason, expected in steps:
        if reason is not None:
            change(server, serial, reason)
        seen: dict[str, int] = {}
        for _ in range(FRESH_CONNECTIONS):  # fresh connections reach both workers
            counter += 1
            der = request_der([(leaf, issuing)], extensions=[nonce_extension(b"%08d" % counter)])
            response = ask(server, der)
            assert nonce_of(response) == b"%08d" % counter
            status = response.certificate_status.name
            seen[status] = seen.get(status, 0) + 1
        assert seen == {expected: FRESH_CONNECTIONS}, f"after {reason or 'enrollment'}: {seen}"


def test_nonce_answers_over_tls_on_the_public_listener(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    """The protocol path writes to uvicorn's TLS transport as well (MINTCA_PUBLIC_TLS)."""
    process, tls_server = start_server(
        initialised_settings, tmp_path / "serve.log", extra_env={"MINTCA_PUBLIC_TLS": "true"}
    )
    try:
        _, leaf, issuing = enroll(tls_server)
        with tls_server.public_client() as public:
            for nonce in (b"first over tls", b"second over tls", b"third over tls"):
                answer = public.post(
                    "/ocsp",
                    content=request_der([(leaf, issuing)], extensions=[nonce_extension(nonce)]),
                    headers={"Content-Type": "application/ocsp-request"},
                )
                assert answer.status_code == 200, answer.text
                response = ocsp.load_der_ocsp_response(answer.content)
                assert nonce_of(response) == nonce
                assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    finally:
        stop_server(process)
