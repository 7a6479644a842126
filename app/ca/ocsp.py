"""OCSP codec (RFC 6960, RFC 5019 profile): parse requests, build signed responses.

Hand-built with asn1crypto: cryptography handles one CertID per request and per response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.ca.signer import Signer

CertStatusName = Literal["good", "revoked", "unknown"]
UnsuccessfulStatus = Literal[
    "malformed_request", "internal_error", "try_later", "sig_required", "unauthorized"
]

# CertID hash algorithms we answer for, with their digest sizes. SHA-1 is what RFC 5019 §2.1.1
# clients send; the SHA-2 family is what newer clients (`openssl ocsp -sha256`) may send.
_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

_NONCE_OID = "1.3.6.1.5.5.7.48.1.2"  # id-pkix-ocsp-nonce, RFC 6960 §4.4.1
# RFC 9654 §2.1 allows 1 to 128 octets (RFC 8954 had 32); outside that, malformedRequest as
# RFC 8954 §2.1 required.
_MAX_NONCE_OCTETS = 128
# Work limit per request (issue 12): 1,000 CertIDs cost about a second of CPU to answer. RFC 6960
# sets no bound; RFC 5019 §2.1.1 profiles one CertID per request. More than this is answered
# malformedRequest, the status the RFC gives a request the responder will not process as sent.
MAX_CERT_IDS = 20

# Signature AlgorithmIdentifiers the Signer may name. RSA PKCS#1 v1.5 carries NULL parameters
# (RFC 4055 §5); ECDSA (RFC 5758 §3.2) and EdDSA (RFC 8410 §3) carry none.
_NULL_PARAMETER_SIGNATURES = frozenset(
    {"1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13"}
)
_ABSENT_PARAMETER_SIGNATURES = frozenset(
    {
        "1.2.840.10045.4.3.2",
        "1.2.840.10045.4.3.3",
        "1.2.840.10045.4.3.4",
        "1.3.101.112",
        "1.3.101.113",
    }
)

# RFC 5280 §5.3.1 CRLReason codes; removeFromCRL (8) only means something in a delta CRL.
_REASON_CODES = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}

# RFC 6960 §4.2.1 OCSPResponseStatus values other than successful (4 is unused).
_UNSUCCESSFUL_CODES: dict[str, int] = {
    "malformed_request": 1,
    "internal_error": 2,
    "try_later": 3,
    "sig_required": 5,
    "unauthorized": 6,
}

# What asn1crypto raises on bad input: it parses lazily, so errors surface on field access.
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


class MalformedOCSPRequestError(Exception):
    """The request cannot be answered; reply with build_unsuccessful_response("malformed_request").

    Not a MintCAError: OCSP errors are OCSP responses, never problem+json (RFC 6960 §2.3).
    """


@dataclass(frozen=True)
class CertID:
    """RFC 6960 §4.1.1 CertID; hash_algorithm is an asn1crypto name ("sha1", "sha256", ...)."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int


@dataclass(frozen=True)
class OCSPRequestInfo:
    cert_ids: tuple[CertID, ...]
    # The extnValue contents exactly as sent (normally the DER of an OCTET STRING wrapping the
    # nonce, RFC 9654 §2.1): echoing them verbatim is what clients compare (OpenSSL does).
    nonce: bytes | None

    def __post_init__(self) -> None:
        if not self.cert_ids:
            raise ValueError("an OCSP request names at least one certificate")

    def cache_key(self) -> bytes:
        """Identifies the answer to a nonce-less request: same CertIDs in the same order."""
        return b"\n".join(
            b"%s:%s:%s:%x"
            % (
                cid.hash_algorithm.encode(),
                cid.issuer_name_hash.hex().encode(),
                cid.issuer_key_hash.hex().encode(),
                cid.serial_number,
            )
            for cid in self.cert_ids
        )


@dataclass(frozen=True)
class SingleStatus:
    """One SingleResponse (RFC 6960 §4.2.1); cert_id is echoed as requested, since clients
    (OpenSSL) find their answer by comparing CertIDs, hash algorithm included."""

    cert_id: CertID
    status: CertStatusName
    this_update: datetime
    next_update: datetime | None
    revoked_at: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None

    def __post_init__(self) -> None:
        _require_aware(self.this_update, "this_update")
        if self.next_update is not None:
            _require_aware(self.next_update, "next_update")
            # RFC 6960 §3.2 item 6: a client rejects a nextUpdate that has already passed.
            if self.next_update < self.this_update:
                raise ValueError("next_update is before this_update")
        if self.status == "revoked":
            if self.revoked_at is None:
                raise ValueError("a revoked status needs revoked_at")
            _require_aware(self.revoked_at, "revoked_at")
            if self.revocation_reason is not None and self.revocation_reason not in _REASON_CODES:
                raise ValueError(f"{self.revocation_reason.value} is not a revocation reason")
        elif self.revoked_at is not None or self.revocation_reason is not None:
            raise ValueError(f"a {self.status} status has no revocation time or reason")


def load_ocsp_request(der: bytes) -> OCSPRequestInfo:
    """Parse a DER OCSPRequest with any number of CertIDs; a signature, if any, is ignored.

    Raises:
        MalformedOCSPRequestError: anything RFC 6960 §4.2.1 calls a malformedRequest.
    """
    try:
        return _load_ocsp_request(der)
    except _DECODE_ERRORS as exc:
        raise MalformedOCSPRequestError(f"not a DER OCSPRequest: {str(exc)[:200]}") from exc


def _load_ocsp_request(der: bytes) -> OCSPRequestInfo:
    # strict=True rejects bytes after the outer SEQUENCE.
    request = asn1_ocsp.OCSPRequest.load(der, strict=True)
    tbs = request["tbs_request"]
    if tbs["version"].native != "v1":
        raise MalformedOCSPRequestError("only OCSP version 1 is defined (RFC 6960 §4.1.1)")
    _ = tbs["requestor_name"].native  # decoded only to reject a garbled field
    request_list = tbs["request_list"]
    if len(request_list) > MAX_CERT_IDS:
        raise MalformedOCSPRequestError(
            f"at most {MAX_CERT_IDS} certificates per request, not {len(request_list)}"
        )
    cert_ids: list[CertID] = []
    for single in request_list:
        _check_extensions(single["single_request_extensions"], understood=())
        cert_ids.append(_parse_cert_id(single["req_cert"]))
    if not cert_ids:
        raise MalformedOCSPRequestError("the requestList is empty")
    extensions = _check_extensions(tbs["request_extensions"], understood=(_NONCE_OID,))
    nonce = extensions.get(_NONCE_OID)
    if nonce is not None:
        _check_nonce(nonce)
    return OCSPRequestInfo(cert_ids=tuple(cert_ids), nonce=nonce)


def _check_extensions(extensions: Any, *, understood: tuple[str, ...]) -> dict[str, bytes]:
    """Return the raw extnValue contents by OID; unknown critical ones and repeats are errors.

    RFC 6960 §4.1.2: unrecognised extensions are ignored unless critical; RFC 5280 §4.2: an
    extension appears at most once.
    """
    found: dict[str, bytes] = {}
    for extension in extensions:
        # Read as a generic SEQUENCE: asn1crypto's typed Extension decodes extnValue by OID,
        # which would refuse a bare (RFC 2560 style) nonce and odd extensions we ignore anyway.
        fields = asn1_core.Sequence.load(extension.dump(), strict=True)
        if len(fields) not in (2, 3):
            raise MalformedOCSPRequestError("an Extension has two or three fields")
        extn_id, extn_value = fields[0], fields[len(fields) - 1]
        critical = fields[1].native if len(fields) == 3 else False
        if (
            not isinstance(extn_id, asn1_core.ObjectIdentifier)
            or not isinstance(extn_value, asn1_core.OctetString)
            or not isinstance(critical, bool)
        ):
            raise MalformedOCSPRequestError("an Extension is OID, BOOLEAN, OCTET STRING")
        oid: str = extn_id.dotted
        if oid in found:
            raise MalformedOCSPRequestError(f"extension {oid} appears twice")
        if critical and oid not in understood:
            raise MalformedOCSPRequestError(f"unsupported critical extension {oid}")
        found[oid] = bytes(extn_value.contents)
    return found


def _check_nonce(raw: bytes) -> None:
    # RFC 9654 §2.1: extnValue holds an OCTET STRING of 1..128 octets. Clients that put the
    # nonce in extnValue bare (RFC 2560 §4.4.1 read literally) are measured on the bare value.
    try:
        value: bytes = asn1_core.OctetString.load(raw, strict=True).native
    except _DECODE_ERRORS:
        value = raw
    if not 1 <= len(value) <= _MAX_NONCE_OCTETS:
        raise MalformedOCSPRequestError(
            f"the nonce must be 1 to {_MAX_NONCE_OCTETS} octets, not {len(value)}"
        )


def _parse_cert_id(cert_id: Any) -> CertID:
    algorithm: str = cert_id["hash_algorithm"]["algorithm"].native
    size = _DIGEST_SIZES.get(algorithm)
    if size is None:
        raise MalformedOCSPRequestError(f"unsupported CertID hash algorithm {algorithm}")
    name_hash: bytes = cert_id["issuer_name_hash"].native
    key_hash: bytes = cert_id["issuer_key_hash"].native
    if len(name_hash) != size or len(key_hash) != size:
        raise MalformedOCSPRequestError(f"CertID hashes are not {algorithm} digests")
    serial: int = cert_id["serial_number"].native
    return CertID(algorithm, name_hash, key_hash, serial)


def issuer_hashes(issuer: x509.Certificate, hash_algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID for certificates `issuer` signed.

    RFC 6960 §4.1.1: the hash of the issuer's subject DER, and of the value of its
    subjectPublicKey BIT STRING (without tag, length and unused-bits octet). Both are taken
    from the certificate's own encoding, never a re-encoding.
    """
    if hash_algorithm not in _DIGEST_SIZES:
        raise ValueError(f"unsupported CertID hash algorithm {hash_algorithm!r}")
    tbs = _asn1_certificate(issuer)["tbs_certificate"]
    name_der: bytes = tbs["subject"].dump()
    return (
        hashlib.new(hash_algorithm, name_der).digest(),
        hashlib.new(hash_algorithm, _public_key_bits(tbs)).digest(),
    )


def _public_key_bits(tbs_certificate: Any) -> bytes:
    contents: bytes = tbs_certificate["subject_public_key_info"]["public_key"].contents
    if not contents or contents[0] != 0:
        raise ValueError("a subjectPublicKey is a whole number of octets")
    return contents[1:]


def _asn1_certificate(certificate: x509.Certificate) -> Any:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def build_ocsp_response(
    statuses: Sequence[SingleStatus],
    *,
    signer: Signer,
    responder_cert: x509.Certificate,
    produced_at: datetime,
    nonce: bytes | None,
    certs: Sequence[x509.Certificate] = (),
) -> bytes:
    """A successful DER OCSPResponse holding a BasicOCSPResponse signed by `signer`.

    `responder_cert` is the certificate of the signer's key (the CA itself or a delegated
    responder) and only names the responder; pass it in `certs` for clients to receive it.
    """
    if not statuses:
        raise ValueError("an OCSP response answers at least one CertID")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if signer.public_key.public_bytes(*spki) != responder_cert.public_key().public_bytes(*spki):
        raise ValueError("responder_cert does not certify the signer's key")
    # ResponderID byKey, as the RFC 5019 profile prefers: KeyHash is the SHA-1 of the
    # responder's subjectPublicKey value (RFC 6960 §4.2.1), an identifier, not a security use.
    key_hash = hashlib.sha1(
        _public_key_bits(_asn1_certificate(responder_cert)["tbs_certificate"]),
        usedforsecurity=False,
    ).digest()
    response_data: dict[str, Any] = {
        "responder_id": asn1_ocsp.ResponderId(name="by_key", value=key_hash),
        "produced_at": _generalized_time(produced_at),
        "responses": [_single_response(status) for status in statuses],
    }
    if nonce is not None:
        # RFC 6960 §4.4.1: the nonce goes back in responseExtensions; extnValue as received.
        response_data["response_extensions"] = [
            {"extn_id": _NONCE_OID, "extn_value": asn1_core.ParsableOctetString(nonce)}
        ]
    tbs = asn1_ocsp.ResponseData(response_data)
    tbs_der: bytes = tbs.dump()
    basic: dict[str, Any] = {
        "tbs_response_data": tbs,
        "signature_algorithm": _signature_algorithm(signer.signature_algorithm_oid),
        "signature": signer.sign_bytes(tbs_der),
    }
    if certs:
        basic["certs"] = [_asn1_certificate(cert) for cert in certs]
    response = asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {
                # RFC 6960 §4.2.1: id-pkix-ocsp-basic, the type every client can process.
                "response_type": "basic_ocsp_response",
                "response": asn1_core.ParsableOctetString(
                    asn1_ocsp.BasicOCSPResponse(basic).dump()
                ),
            },
        }
    )
    der: bytes = response.dump()
    return der


def build_unsuccessful_response(status: UnsuccessfulStatus) -> bytes:
    """An OCSPResponse with only an error status: RFC 6960 §4.2.1, no responseBytes, unsigned."""
    der: bytes = asn1_ocsp.OCSPResponse({"response_status": _UNSUCCESSFUL_CODES[status]}).dump()
    return der


def _single_response(status: SingleStatus) -> Any:
    cid = status.cert_id
    if cid.hash_algorithm not in _DIGEST_SIZES:
        raise ValueError(f"unsupported CertID hash algorithm {cid.hash_algorithm!r}")
    if status.status == "revoked":
        assert status.revoked_at is not None  # checked in SingleStatus.__post_init__
        revoked: dict[str, Any] = {"revocation_time": _generalized_time(status.revoked_at)}
        # RFC 5280 §5.3.1: reason `unspecified` is left out, as on MintCA's CRLs, so a relying
        # party sees the same entry whichever of the two it asks.
        reason = status.revocation_reason
        if reason is not None and reason != x509.ReasonFlags.unspecified:
            revoked["revocation_reason"] = _REASON_CODES[reason]
        cert_status = asn1_ocsp.CertStatus(name="revoked", value=asn1_ocsp.RevokedInfo(revoked))
    elif status.status == "good":
        cert_status = asn1_ocsp.CertStatus(name="good", value=asn1_ocsp.StatusGood())
    else:
        cert_status = asn1_ocsp.CertStatus(name="unknown", value=asn1_ocsp.StatusUnknown())
    single: dict[str, Any] = {
        "cert_id": {
            # The digest AlgorithmIdentifier gets NULL parameters, as OpenSSL and
            # cryptography send them.
            "hash_algorithm": {"algorithm": cid.hash_algorithm, "parameters": asn1_core.Null()},
            "issuer_name_hash": cid.issuer_name_hash,
            "issuer_key_hash": cid.issuer_key_hash,
            "serial_number": cid.serial_number,
        },
        "cert_status": cert_status,
        "this_update": _generalized_time(status.this_update),
    }
    if status.next_update is not None:
        single["next_update"] = _generalized_time(status.next_update)
    return asn1_ocsp.SingleResponse(single)


def _signature_algorithm(oid: str) -> Any:
    if oid in _NULL_PARAMETER_SIGNATURES:
        return asn1_algos.SignedDigestAlgorithm({"algorithm": oid, "parameters": asn1_core.Null()})
    if oid in _ABSENT_PARAMETER_SIGNATURES:
        return asn1_algos.SignedDigestAlgorithm({"algorithm": oid})
    raise ValueError(f"no AlgorithmIdentifier encoding known for signature algorithm {oid}")


def _generalized_time(value: datetime) -> Any:
    # GeneralizedTime as RFC 5280 §4.1.2.5.2 has it: Zulu, with seconds, no fractions.
    _require_aware(value, "an OCSP time")
    return asn1_core.GeneralizedTime(value.astimezone(UTC).replace(microsecond=0))


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
