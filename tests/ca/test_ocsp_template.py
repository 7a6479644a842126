"""Signing a nonce into a pre-signed OCSP answer (app.ca.ocsp_template): the twin of a nonce
request, and a re-signed answer whose ResponseData is byte for byte what the full codec
builds with the same producedAt and nonce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from app.ca.ocsp import SingleStatus, build_ocsp_response, load_ocsp_request
from app.ca.ocsp_template import ResponseTemplate, split_nonce_request
from app.ca.signer import LocalSigner

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(name: str, *, issuer: x509.Name | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )


CA = _certificate("template CA")
LEAF = _certificate("leaf", issuer=CA.subject)


def _request(*, nonce: bytes | None = None, critical: bool = False) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(LEAF, CA, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=critical)
    return builder.build().public_bytes(Encoding.DER)


def test_the_twin_of_a_nonce_request_is_the_same_request_without_it() -> None:
    split = split_nonce_request(_request(nonce=b"0123456789abcdef"))
    assert split is not None
    twin, extn_value = split
    assert twin == _request(), "the twin must be the nonce-less request's exact DER"
    assert extn_value == b"\x04\x10" + b"0123456789abcdef", "extnValue as sent"


def _tlv(tag: int, contents: bytes) -> bytes:
    assert len(contents) < 0x80
    return bytes((tag, len(contents))) + contents


def _with_two_extensions() -> bytes:
    """The nonce and an unknown extension: a shape the fast path leaves alone."""
    parsed = asn1_ocsp.OCSPRequest.load(_request())
    request_list = parsed["tbs_request"]["request_list"].dump()
    nonce = _tlv(0x30, bytes.fromhex("06092b0601050507300102") + _tlv(0x04, b"\x04\x01n"))
    other = _tlv(0x30, bytes.fromhex("06032a0304") + _tlv(0x04, b"\x05\x00"))
    extensions = _tlv(0xA2, _tlv(0x30, nonce + other))
    return _tlv(0x30, _tlv(0x30, request_list + extensions))


def _reshaped(*, before: bytes = b"", signature: bytes = b"") -> bytes:
    """The nonce request with TBSRequest fields put before its requestList (version,
    requestorName) or an optionalSignature after it."""
    parsed = asn1_ocsp.OCSPRequest.load(_request(nonce=b"n"))
    tbs = parsed["tbs_request"]
    fields = tbs["request_list"].dump() + tbs["request_extensions"].dump()
    return _tlv(0x30, _tlv(0x30, before + fields) + signature)


@pytest.mark.parametrize(
    "der",
    [
        pytest.param(_request(), id="no nonce"),
        pytest.param(_reshaped(before=_tlv(0xA0, b"\x02\x01\x00")), id="explicit version"),
        pytest.param(_reshaped(before=_tlv(0xA1, _tlv(0xA4, b"\x30\x00"))), id="requestorName"),
        pytest.param(
            _reshaped(signature=_tlv(0xA0, _tlv(0x30, _tlv(0x30, b"") + b"\x03\x01\x00"))),
            id="signed request",
        ),
        pytest.param(_request(nonce=b"n", critical=True), id="critical nonce (BOOLEAN present)"),
        pytest.param(_request(nonce=b"n") + b"\x00", id="trailing byte"),
        pytest.param(_request(nonce=b"x" * 129), id="nonce of 129 octets"),
        pytest.param(_with_two_extensions(), id="a second extension"),
        pytest.param(b"\x30\x80\x00\x00", id="indefinite length"),
        pytest.param(b"", id="empty"),
    ],
)
def test_other_shapes_are_left_to_the_full_codec(der: bytes) -> None:
    assert split_nonce_request(der) is None


def test_a_resigned_answer_is_what_the_codec_builds_with_that_nonce() -> None:
    signer = LocalSigner(KEY)
    info = load_ocsp_request(_request())
    status = SingleStatus(info.cert_ids[0], "good", NOW, NOW + timedelta(hours=12))
    plain = build_ocsp_response(
        [status], signer=signer, responder_cert=CA, produced_at=NOW, nonce=None, certs=[CA]
    )
    split = split_nonce_request(_request(nonce=b"a nonce"))
    assert split is not None
    later = NOW + timedelta(minutes=7)

    resigned = ResponseTemplate.of(plain, signer).sign_with_nonce(later, split[1])

    built = build_ocsp_response(
        [status], signer=signer, responder_cert=CA, produced_at=later, nonce=split[1], certs=[CA]
    )
    response, expected = ocsp.load_der_ocsp_response(resigned), ocsp.load_der_ocsp_response(built)
    assert response.tbs_response_bytes == expected.tbs_response_bytes
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"a nonce"
    assert response.certificates == [CA]
    assert response.produced_at_utc == later
    KEY.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )


def test_the_reshaping_helper_alone_keeps_the_shape() -> None:
    assert split_nonce_request(_reshaped()) == split_nonce_request(_request(nonce=b"n"))


def test_the_two_extension_case_is_a_valid_nonce_request() -> None:
    """Keeps the case above honest: the full codec accepts it, so only its shape differs."""
    assert load_ocsp_request(_with_two_extensions()).nonce == b"\x04\x01n"
