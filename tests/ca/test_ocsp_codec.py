"""The OCSP codec against independent readers: cryptography, asn1crypto and `openssl ocsp`."""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pkilint import loader as pkilint_loader
from pkilint import pkix
from pkilint.pkix import extension as pkilint_extension
from pkilint.pkix import name as pkilint_name
from pkilint.pkix import ocsp as pkilint_ocsp

from app.ca.keys import PrivateKey, PublicKey, generate_private_key
from app.ca.ocsp import (
    CertID,
    CertStatusName,
    MalformedOCSPRequestError,
    OCSPRequestInfo,
    SingleStatus,
    UnsuccessfulStatus,
    build_ocsp_response,
    build_unsuccessful_response,
    issuer_hashes,
    load_ocsp_request,
)
from app.ca.signer import LocalSigner

OPENSSL = "/usr/bin/openssl"
RESPONDER_KEY_TYPES = ("ec-p256", "ed25519", "rsa-2048")
# Fractions of a second on purpose: the response must carry whole seconds.
THIS_UPDATE = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)
NEXT_UPDATE = THIS_UPDATE + timedelta(hours=12)
PRODUCED_AT = THIS_UPDATE + timedelta(seconds=1)
REVOKED_AT = datetime(2025, 2, 27, 8, 30, 15, 999999, tzinfo=UTC)
NONCE = bytes(range(16, 48))
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    issuer: x509.Certificate
    responders: dict[str, tuple[PrivateKey, x509.Certificate]]
    leaf_a: x509.Certificate
    leaf_b: x509.Certificate


def _issue(
    cn: str,
    public_key: PublicKey,
    *,
    issuer: x509.Certificate | None,
    signing_key: PrivateKey,
    ca: bool,
    ocsp_signing: bool = False,
) -> x509.Certificate:
    # Valid around the real clock: `openssl ocsp` checks the chain at the current time.
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    if ocsp_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return LocalSigner(signing_key).sign_certificate(builder)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("Test Root", root_key.public_key(), issuer=None, signing_key=root_key, ca=True)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = _issue(
        "Test Issuing CA", issuer_key.public_key(), issuer=root, signing_key=root_key, ca=True
    )
    responders = {}
    for key_type in RESPONDER_KEY_TYPES:
        key = generate_private_key(key_type)
        cert = _issue(
            f"Test OCSP Responder {key_type}",
            key.public_key(),
            issuer=issuer,
            signing_key=issuer_key,
            ca=False,
            ocsp_signing=True,
        )
        responders[key_type] = (key, cert)
    leaves = [
        _issue(
            f"leaf-{name}.test",
            ec.generate_private_key(ec.SECP256R1()).public_key(),
            issuer=issuer,
            signing_key=issuer_key,
            ca=False,
        )
        for name in "ab"
    ]
    return Pki(root, issuer, responders, leaves[0], leaves[1])


def _cryptography_request(pki: Pki, algorithm: hashes.HashAlgorithm, nonce: bytes | None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(pki.leaf_a, pki.issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _asn1_request(
    cert_ids: list[dict[str, Any]],
    *,
    extensions: list[Any] | None = None,
    version: int = 0,
) -> bytes:
    tbs: dict[str, Any] = {"version": version, "request_list": [{"req_cert": c} for c in cert_ids]}
    if extensions is not None:
        tbs["request_extensions"] = extensions
    der: bytes = asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()
    return der


def _asn1_cert_id(cid: CertID) -> dict[str, Any]:
    return {
        "hash_algorithm": {"algorithm": cid.hash_algorithm},
        "issuer_name_hash": cid.issuer_name_hash,
        "issuer_key_hash": cid.issuer_key_hash,
        "serial_number": cid.serial_number,
    }


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV, for the structures asn1crypto would "helpfully" re-encode."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8)
    return bytes([tag, 0x80 | len(length)]) + length + content


def _extension(oid: str, raw_value: bytes, *, critical: bool = False) -> Any:
    """A request Extension whose extnValue contents are exactly `raw_value`."""
    body = asn1_core.ObjectIdentifier(oid).dump()
    if critical:
        body += b"\x01\x01\xff"
    return asn1_ocsp.TBSRequestExtension.load(_tlv(0x30, body + _tlv(0x04, raw_value)))


def _nonce_extension(nonce: bytes) -> Any:
    return _extension(NONCE_OID, _wrapped(nonce))


def _wrapped(nonce: bytes) -> bytes:
    """The extnValue contents a nonce-sending client puts on the wire (RFC 9654 §2.1)."""
    der: bytes = asn1_core.OctetString(nonce).dump()
    return der


def _responder_signer(pki: Pki, key_type: str) -> tuple[LocalSigner, x509.Certificate]:
    key, cert = pki.responders[key_type]
    return LocalSigner(key), cert


def _verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# Requests


@pytest.mark.parametrize(
    ("algorithm", "name"),
    [
        pytest.param(hashes.SHA1(), "sha1", id="sha1"),
        pytest.param(hashes.SHA256(), "sha256", id="sha256"),
    ],
)
@pytest.mark.parametrize(
    "nonce", [pytest.param(None, id="no-nonce"), pytest.param(NONCE, id="nonce")]
)
def test_request_from_cryptography_round_trips(
    pki: Pki, algorithm: hashes.HashAlgorithm, name: str, nonce: bytes | None
) -> None:
    der = _cryptography_request(pki, algorithm, nonce)

    info = load_ocsp_request(der)

    name_hash, key_hash = issuer_hashes(pki.issuer, name)
    assert info.cert_ids == (CertID(name, name_hash, key_hash, pki.leaf_a.serial_number),)
    # cryptography's own reading of the same request agrees on the hashes.
    parsed = ocsp.load_der_ocsp_request(der)
    assert (parsed.issuer_name_hash, parsed.issuer_key_hash) == (name_hash, key_hash)
    assert info.nonce == (None if nonce is None else _wrapped(nonce))


def test_issuer_key_hash_is_the_subject_key_identifier_method_1(pki: Pki) -> None:
    # RFC 5280 §4.2.1.2 method (1) hashes the same BIT STRING value with SHA-1.
    ski = x509.SubjectKeyIdentifier.from_public_key(pki.issuer.public_key())
    assert issuer_hashes(pki.issuer, "sha1")[1] == ski.digest


def test_issuer_hashes_rejects_unknown_algorithm(pki: Pki) -> None:
    with pytest.raises(ValueError, match="md5"):
        issuer_hashes(pki.issuer, "md5")


def test_two_cert_id_request_parses_to_both(pki: Pki) -> None:
    hashes_ = issuer_hashes(pki.issuer, "sha1")
    a = CertID("sha1", *hashes_, pki.leaf_a.serial_number)
    b = CertID("sha1", *hashes_, pki.leaf_b.serial_number)

    info = load_ocsp_request(
        _asn1_request([_asn1_cert_id(a), _asn1_cert_id(b)], extensions=[_nonce_extension(NONCE)])
    )

    assert info.cert_ids == (a, b)
    assert info.nonce == _wrapped(NONCE)


def test_cache_key_depends_on_cert_ids_only(pki: Pki) -> None:
    hashes_ = issuer_hashes(pki.issuer, "sha1")
    a = CertID("sha1", *hashes_, pki.leaf_a.serial_number)
    b = CertID("sha1", *hashes_, pki.leaf_b.serial_number)
    a256 = CertID("sha256", *issuer_hashes(pki.issuer, "sha256"), pki.leaf_a.serial_number)

    key = OCSPRequestInfo((a, b), nonce=None).cache_key()

    assert OCSPRequestInfo((a, b), nonce=b"\x04\x01x").cache_key() == key
    assert OCSPRequestInfo((b, a), nonce=None).cache_key() != key
    assert OCSPRequestInfo((a,), nonce=None).cache_key() != key
    assert (
        OCSPRequestInfo((a256,), nonce=None).cache_key() != OCSPRequestInfo((a,), None).cache_key()
    )


def test_request_info_needs_a_cert_id() -> None:
    with pytest.raises(ValueError, match="at least one"):
        OCSPRequestInfo((), nonce=None)


_SHA1_ID = CertID("sha1", b"\x11" * 20, b"\x22" * 20, 0x1234)
_VALID = _asn1_request([_asn1_cert_id(_SHA1_ID)])


def _with(**changes: Any) -> dict[str, Any]:
    return {**_asn1_cert_id(_SHA1_ID), **changes}


def test_minimal_asn1crypto_request_is_valid() -> None:
    assert load_ocsp_request(_VALID) == OCSPRequestInfo((_SHA1_ID,), nonce=None)


def test_bare_nonce_is_echoed_as_sent() -> None:
    # RFC 2560-era clients put the nonce in extnValue without the inner OCTET STRING.
    der = _asn1_request([_asn1_cert_id(_SHA1_ID)], extensions=[_extension(NONCE_OID, NONCE)])
    assert load_ocsp_request(der).nonce == NONCE


def test_signed_request_is_read_with_its_signature_ignored() -> None:
    tbs = asn1_ocsp.OCSPRequest.load(_VALID)["tbs_request"]
    signature = {"signature_algorithm": {"algorithm": "sha256_ecdsa"}, "signature": b"\x00" * 8}
    signed = asn1_ocsp.OCSPRequest({"tbs_request": tbs, "optional_signature": signature}).dump()

    assert load_ocsp_request(signed) == load_ocsp_request(_VALID)


def test_unknown_non_critical_extension_is_ignored() -> None:
    der = _asn1_request([_asn1_cert_id(_SHA1_ID)], extensions=[_extension("1.2.3.4", b"\x05\x00")])
    assert load_ocsp_request(der).nonce is None


@pytest.mark.parametrize(
    "der",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="garbage"),
        pytest.param(b"\x30\x82\xff\xff\x30", id="length-beyond-data"),
        pytest.param(_VALID[:-3], id="truncated"),
        pytest.param(_VALID[:1], id="tag-only"),
        pytest.param(_VALID + b"\x00", id="trailing-zero"),
        pytest.param(_VALID + _VALID, id="two-requests"),
        pytest.param(b"\x04\x03abc", id="octet-string"),
        pytest.param(_asn1_request([]), id="empty-request-list"),
        pytest.param(_asn1_request([_asn1_cert_id(_SHA1_ID)], version=1), id="version-2"),
        pytest.param(
            _asn1_request(
                [
                    _with(
                        hash_algorithm={"algorithm": "md5"},
                        issuer_name_hash=b"\x11" * 16,
                        issuer_key_hash=b"\x22" * 16,
                    )
                ]
            ),
            id="md5-cert-id",
        ),
        pytest.param(
            _asn1_request([_with(hash_algorithm={"algorithm": "1.2.3.4"})]), id="unknown-hash-oid"
        ),
        pytest.param(_asn1_request([_with(issuer_name_hash=b"\x11" * 19)]), id="short-name-hash"),
        pytest.param(
            _asn1_request([_with(hash_algorithm={"algorithm": "sha256"})]), id="sha1-sized-sha256"
        ),
        pytest.param(
            _asn1_request([_asn1_cert_id(_SHA1_ID)], extensions=[_nonce_extension(b"")]),
            id="empty-nonce",
        ),
        pytest.param(
            _asn1_request([_asn1_cert_id(_SHA1_ID)], extensions=[_nonce_extension(b"n" * 129)]),
            id="nonce-over-128-octets",
        ),
        pytest.param(
            _asn1_request(
                [_asn1_cert_id(_SHA1_ID)],
                extensions=[_nonce_extension(b"1" * 16), _nonce_extension(b"2" * 16)],
            ),
            id="two-nonces",
        ),
        pytest.param(
            _asn1_request(
                [_asn1_cert_id(_SHA1_ID)],
                extensions=[_extension("1.2.3.4", b"\x05\x00", critical=True)],
            ),
            id="unknown-critical-extension",
        ),
    ],
)
def test_malformed_requests_are_rejected(der: bytes) -> None:
    with pytest.raises(MalformedOCSPRequestError):
        load_ocsp_request(der)


def test_corrupted_requests_raise_only_the_codec_error() -> None:
    """Flipped and cut bytes either parse or raise MalformedOCSPRequestError, nothing else."""
    rng = random.Random(6960)
    valid = _asn1_request(
        [_asn1_cert_id(_SHA1_ID), _asn1_cert_id(_SHA1_ID)], extensions=[_nonce_extension(NONCE)]
    )
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        with contextlib.suppress(MalformedOCSPRequestError):
            load_ocsp_request(bytes(data))


# Responses


def _single_status(
    pki: Pki, status: CertStatusName, reason: x509.ReasonFlags | None = None
) -> SingleStatus:
    cid = CertID("sha1", *issuer_hashes(pki.issuer, "sha1"), pki.leaf_a.serial_number)
    revoked = status == "revoked"
    return SingleStatus(
        cert_id=cid,
        status=status,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
        revoked_at=REVOKED_AT if revoked else None,
        revocation_reason=reason,
    )


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        pytest.param("good", None, ocsp.OCSPCertStatus.GOOD, id="good"),
        pytest.param("unknown", None, ocsp.OCSPCertStatus.UNKNOWN, id="unknown"),
        pytest.param("revoked", None, ocsp.OCSPCertStatus.REVOKED, id="revoked-no-reason"),
        pytest.param(
            "revoked",
            x509.ReasonFlags.key_compromise,
            ocsp.OCSPCertStatus.REVOKED,
            id="revoked-key-compromise",
        ),
        pytest.param(
            "revoked",
            x509.ReasonFlags.unspecified,
            ocsp.OCSPCertStatus.REVOKED,
            id="revoked-unspecified (no reason code)",
        ),
    ],
)
def test_single_response_reads_back_with_cryptography(
    pki: Pki, status: CertStatusName, reason: x509.ReasonFlags | None, expected: ocsp.OCSPCertStatus
) -> None:
    # The nonce comes from a real request, so the echo is tested end to end.
    info = load_ocsp_request(_cryptography_request(pki, hashes.SHA1(), NONCE))
    signer, responder = _responder_signer(pki, "ec-p256")

    der = build_ocsp_response(
        [_single_status(pki, status, reason)],
        signer=signer,
        responder_cert=responder,
        produced_at=PRODUCED_AT,
        nonce=info.nonce,
        certs=[responder],
    )

    resp = ocsp.load_der_ocsp_response(der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status is expected
    assert resp.serial_number == pki.leaf_a.serial_number
    assert isinstance(resp.hash_algorithm, hashes.SHA1)
    assert (resp.issuer_name_hash, resp.issuer_key_hash) == issuer_hashes(pki.issuer, "sha1")
    assert resp.this_update_utc == THIS_UPDATE.replace(microsecond=0)
    assert resp.next_update_utc == NEXT_UPDATE.replace(microsecond=0)
    assert resp.produced_at_utc == PRODUCED_AT.replace(microsecond=0)
    if status == "revoked":
        assert resp.revocation_time_utc == REVOKED_AT.replace(microsecond=0)
    else:
        assert resp.revocation_time_utc is None
    # RFC 5280 §5.3.1: `unspecified` is sent as no reason, as on the CRL.
    expected_reason = None if reason is x509.ReasonFlags.unspecified else reason
    assert resp.revocation_reason is expected_reason
    nonce = resp.extensions.get_extension_for_class(x509.OCSPNonce)
    assert nonce.value.nonce == NONCE
    assert not nonce.critical
    ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key)
    assert resp.responder_key_hash == ski.digest
    assert resp.responder_name is None
    assert resp.certificates == [responder]
    _verify_signature(signer.public_key, resp.signature, resp.tbs_response_bytes)


def test_times_are_whole_seconds_zulu(pki: Pki) -> None:
    signer, responder = _responder_signer(pki, "ec-p256")
    der = build_ocsp_response(
        [_single_status(pki, "revoked", x509.ReasonFlags.superseded)],
        signer=signer,
        responder_cert=responder,
        produced_at=PRODUCED_AT.astimezone(timezone(timedelta(hours=2))),
        nonce=None,
    )

    data = asn1_ocsp.OCSPResponse.load(der).response_data
    single = data["responses"][0]
    assert data["produced_at"].contents == b"20250301120001Z"
    assert single["this_update"].contents == b"20250301120000Z"
    assert single["next_update"].contents == b"20250302000000Z"
    assert single["cert_status"].chosen["revocation_time"].contents == b"20250227083015Z"


def test_response_without_nonce_or_certs(pki: Pki) -> None:
    signer, responder = _responder_signer(pki, "ec-p256")
    der = build_ocsp_response(
        [_single_status(pki, "good")],
        signer=signer,
        responder_cert=responder,
        produced_at=PRODUCED_AT,
        nonce=None,
    )
    resp = ocsp.load_der_ocsp_response(der)
    assert len(resp.extensions) == 0
    assert resp.certificates == []


def test_two_statuses_read_back_with_asn1crypto(pki: Pki) -> None:
    hashes_ = issuer_hashes(pki.issuer, "sha256")
    a = CertID("sha256", *hashes_, pki.leaf_a.serial_number)
    b = CertID("sha256", *hashes_, pki.leaf_b.serial_number)
    signer, responder = _responder_signer(pki, "ec-p256")
    statuses = [
        SingleStatus(a, "good", THIS_UPDATE, NEXT_UPDATE),
        SingleStatus(
            b, "revoked", THIS_UPDATE, None, REVOKED_AT, x509.ReasonFlags.cessation_of_operation
        ),
    ]

    der = build_ocsp_response(
        statuses, signer=signer, responder_cert=responder, produced_at=PRODUCED_AT, nonce=None
    )

    parsed = asn1_ocsp.OCSPResponse.load(der, strict=True)
    assert parsed["response_status"].native == "successful"
    basic = parsed.basic_ocsp_response
    data = basic["tbs_response_data"]
    assert data["version"].native == "v1"
    assert data["responder_id"].name == "by_key"
    assert data["response_extensions"].native is None
    first, second = data["responses"]
    for single, cid in ((first, a), (second, b)):
        assert single["cert_id"]["hash_algorithm"]["algorithm"].native == "sha256"
        assert single["cert_id"]["issuer_name_hash"].native == cid.issuer_name_hash
        assert single["cert_id"]["issuer_key_hash"].native == cid.issuer_key_hash
        assert single["cert_id"]["serial_number"].native == cid.serial_number
        assert single["this_update"].native == THIS_UPDATE.replace(microsecond=0)
    assert first["cert_status"].name == "good"
    assert first["next_update"].native == NEXT_UPDATE.replace(microsecond=0)
    assert second["cert_status"].name == "revoked"
    revoked = second["cert_status"].chosen
    assert revoked["revocation_time"].native == REVOKED_AT.replace(microsecond=0)
    assert revoked["revocation_reason"].native == "cessation_of_operation"
    assert second["next_update"].native is None
    # cryptography reads both as well, and the signature covers them.
    resp = ocsp.load_der_ocsp_response(der)
    assert [(r.serial_number, r.certificate_status) for r in resp.responses] == [
        (a.serial_number, ocsp.OCSPCertStatus.GOOD),
        (b.serial_number, ocsp.OCSPCertStatus.REVOKED),
    ]
    _verify_signature(signer.public_key, resp.signature, resp.tbs_response_bytes)


def _run_openssl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, "ocsp", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _openssl_hex(cert: x509.Certificate) -> str:
    serial = cert.serial_number
    return serial.to_bytes((serial.bit_length() + 7) // 8).hex().upper()


def _write_pems(pki: Pki, directory: Path) -> None:
    for name, cert in {
        "root": pki.root,
        "issuer": pki.issuer,
        "a": pki.leaf_a,
        "b": pki.leaf_b,
    }.items():
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


_CLIENT = ("-issuer", "issuer.pem", "-cert", "a.pem", "-cert", "b.pem")
# Trust only the root; the issuing CA is an untrusted intermediate, the responder cert comes
# with the response: OpenSSL must build responder -> issuer -> root and see EKU OCSPSigning.
_TRUST = ("-CAfile", "root.pem", "-no-CApath", "-no-CAstore", "-verify_other", "issuer.pem")


@pytest.mark.parametrize("key_type", RESPONDER_KEY_TYPES)
def test_openssl_verifies_a_two_certificate_response(
    pki: Pki, tmp_path: Path, key_type: str
) -> None:
    """`openssl ocsp -cert a -cert b` against a delegated responder (EKU OCSPSigning)."""
    signer, responder = _responder_signer(pki, key_type)
    _write_pems(pki, tmp_path)

    made = _run_openssl(*_CLIENT, "-reqout", "req.der", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    info = load_ocsp_request((tmp_path / "req.der").read_bytes())
    assert [cid.serial_number for cid in info.cert_ids] == [
        pki.leaf_a.serial_number,
        pki.leaf_b.serial_number,
    ]
    assert info.nonce is not None  # openssl sends one by default
    now = datetime.now(UTC)
    statuses = [
        SingleStatus(
            info.cert_ids[0], "good", now - timedelta(minutes=1), now + timedelta(hours=1)
        ),
        SingleStatus(
            info.cert_ids[1],
            "revoked",
            now - timedelta(minutes=1),
            now + timedelta(hours=1),
            REVOKED_AT,
            x509.ReasonFlags.key_compromise,
        ),
    ]
    der = build_ocsp_response(
        statuses,
        signer=signer,
        responder_cert=responder,
        produced_at=now,
        nonce=info.nonce,
        certs=[responder],
    )
    (tmp_path / "resp.der").write_bytes(der)

    # The request's nonce must come back: with -reqin openssl compares the two.
    echoed = _run_openssl(
        "-reqin", "req.der", "-respin", "resp.der", *_TRUST, "-resp_text", cwd=tmp_path
    )
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stderr.strip() == "Response verify OK"
    assert re.search(rf"OCSP Nonce:\s+{info.nonce.hex().upper()}\n", echoed.stdout)
    answers = re.findall(r"Serial Number: ([0-9A-F]+)\n\s*Cert Status: (\w+)", echoed.stdout)
    assert answers == [(_openssl_hex(pki.leaf_a), "good"), (_openssl_hex(pki.leaf_b), "revoked")]
    assert "Revocation Reason: keyCompromise (0x1)" in echoed.stdout

    # What the client prints per certificate, matching our SingleResponses to its CertIDs.
    summary = _run_openssl(*_CLIENT, "-no_nonce", "-respin", "resp.der", *_TRUST, cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert summary.stderr.strip() == "Response verify OK"
    assert "a.pem: good" in summary.stdout
    assert "b.pem: revoked" in summary.stdout
    assert "Reason: keyCompromise" in summary.stdout


def test_openssl_rejects_a_tampered_response(pki: Pki, tmp_path: Path) -> None:
    """The check above can fail: one changed second in producedAt breaks the signature."""
    signer, responder = _responder_signer(pki, "ec-p256")
    _write_pems(pki, tmp_path)
    now = datetime.now(UTC).replace(second=30)
    cid = CertID("sha1", *issuer_hashes(pki.issuer, "sha1"), pki.leaf_a.serial_number)
    der = build_ocsp_response(
        [SingleStatus(cid, "good", now, now + timedelta(hours=1))],
        signer=signer,
        responder_cert=responder,
        produced_at=now,
        nonce=None,
        certs=[responder],
    )
    stamp = now.strftime("%Y%m%d%H%M%SZ").encode()
    (tmp_path / "resp.der").write_bytes(der.replace(stamp, stamp.replace(b"30Z", b"31Z"), 1))

    result = _run_openssl(*_CLIENT, "-no_nonce", "-respin", "resp.der", *_TRUST, cwd=tmp_path)

    assert "Response Verify Failure" in result.stderr


@pytest.mark.parametrize("key_type", RESPONDER_KEY_TYPES)
def test_signature_verifies_for_each_key_type(pki: Pki, key_type: str) -> None:
    signer, responder = _responder_signer(pki, key_type)

    der = build_ocsp_response(
        [_single_status(pki, "good")],
        signer=signer,
        responder_cert=responder,
        produced_at=PRODUCED_AT,
        nonce=None,
    )

    resp = ocsp.load_der_ocsp_response(der)
    assert resp.signature_algorithm_oid.dotted_string == signer.signature_algorithm_oid
    _verify_signature(signer.public_key, resp.signature, resp.tbs_response_bytes)
    # RSA PKCS#1 v1.5 carries NULL parameters (RFC 4055); ECDSA and Ed25519 none (RFC 5758, 8410).
    algorithm = asn1_ocsp.OCSPResponse.load(der).basic_ocsp_response["signature_algorithm"]
    oid_der = asn1_core.ObjectIdentifier(signer.signature_algorithm_oid).dump()
    null = b"\x05\x00" if key_type.startswith("rsa") else b""
    assert algorithm.dump() == _tlv(0x30, oid_der + null)


@pytest.mark.parametrize("key_type", RESPONDER_KEY_TYPES)
def test_pkilint_finds_nothing(pki: Pki, key_type: str) -> None:
    """pkilint's RFC 6960 linter, the same checks as `lint_ocsp_response lint -s ALL`."""
    signer, responder = _responder_signer(pki, key_type)
    info = load_ocsp_request(_cryptography_request(pki, hashes.SHA1(), NONCE))
    der = build_ocsp_response(
        [_single_status(pki, "revoked", x509.ReasonFlags.key_compromise)],
        signer=signer,
        responder_cert=responder,
        produced_at=PRODUCED_AT,
        nonce=info.nonce,
        certs=[responder],
    )
    validator = pkilint_ocsp.create_pkix_ocsp_response_validator_container(
        [
            pkilint_ocsp.create_response_decoder(),
            pkix.create_attribute_decoder(pkilint_name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(pkilint_extension.EXTENSION_MAPPINGS),
        ],
        [],
    )
    document = pkilint_loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "response")

    results = validator.validate(document.root)

    assert [f for r in results for f in r.finding_descriptions] == []


def test_signer_must_match_responder_cert(pki: Pki) -> None:
    signer, _ = _responder_signer(pki, "ec-p256")
    _, other = _responder_signer(pki, "ed25519")
    with pytest.raises(ValueError, match="signer's key"):
        build_ocsp_response(
            [_single_status(pki, "good")],
            signer=signer,
            responder_cert=other,
            produced_at=PRODUCED_AT,
            nonce=None,
        )


def test_response_needs_a_status(pki: Pki) -> None:
    signer, responder = _responder_signer(pki, "ec-p256")
    with pytest.raises(ValueError, match="at least one"):
        build_ocsp_response(
            [], signer=signer, responder_cert=responder, produced_at=PRODUCED_AT, nonce=None
        )


_CID = CertID("sha1", b"\x11" * 20, b"\x22" * 20, 7)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda: SingleStatus(_CID, "revoked", THIS_UPDATE, None),
            "needs revoked_at",
            id="revoked-no-time",
        ),
        pytest.param(
            lambda: SingleStatus(_CID, "good", THIS_UPDATE, None, REVOKED_AT),
            "no revocation",
            id="good-with-time",
        ),
        pytest.param(
            lambda: SingleStatus(
                _CID, "unknown", THIS_UPDATE, None, None, x509.ReasonFlags.superseded
            ),
            "no revocation",
            id="unknown-with-reason",
        ),
        pytest.param(
            lambda: SingleStatus(
                _CID, "revoked", THIS_UPDATE, None, REVOKED_AT, x509.ReasonFlags.remove_from_crl
            ),
            "removeFromCRL is not a revocation reason",
            id="remove-from-crl",
        ),
        pytest.param(
            lambda: SingleStatus(_CID, "good", THIS_UPDATE.replace(tzinfo=None), None),
            "timezone-aware",
            id="naive-this-update",
        ),
        pytest.param(
            lambda: SingleStatus(_CID, "good", THIS_UPDATE, THIS_UPDATE - timedelta(seconds=1)),
            "before this_update",
            id="next-before-this",
        ),
    ],
)
def test_inconsistent_single_status_is_rejected(
    make: Callable[[], SingleStatus], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_naive_produced_at_is_rejected(pki: Pki) -> None:
    signer, responder = _responder_signer(pki, "ec-p256")
    with pytest.raises(ValueError, match="timezone-aware"):
        build_ocsp_response(
            [_single_status(pki, "good")],
            signer=signer,
            responder_cert=responder,
            produced_at=PRODUCED_AT.replace(tzinfo=None),
            nonce=None,
        )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("malformed_request", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        ("internal_error", ocsp.OCSPResponseStatus.INTERNAL_ERROR),
        ("try_later", ocsp.OCSPResponseStatus.TRY_LATER),
        ("sig_required", ocsp.OCSPResponseStatus.SIG_REQUIRED),
        ("unauthorized", ocsp.OCSPResponseStatus.UNAUTHORIZED),
    ],
)
def test_unsuccessful_response(
    status: UnsuccessfulStatus, expected: ocsp.OCSPResponseStatus
) -> None:
    der = build_unsuccessful_response(status)

    assert ocsp.load_der_ocsp_response(der).response_status is expected
    assert der == b"\x30\x03\x0a\x01" + bytes([expected.value])
