"""Signing a nonce into an already built OCSP answer, in DER, without an ASN.1 library.

A request with a nonce must get a fresh signature (RFC 6960 §4.4.1), but everything else in
its answer (responder, CertIDs, statuses, certificates) is what the pre-signed nonce-less
answer for the same requestList already holds. `split_nonce_request` recognises the one shape
clients send (`openssl ocsp`, cryptography: requestList plus a lone nonce extension) and gives
the nonce-less twin of the request; `ResponseTemplate` re-signs the twin's answer with a new
producedAt and the nonce. Anything else is left to the full codec in `app.ca.ocsp`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from app.ca.signer import Signer

# DER of the OBJECT IDENTIFIERs spliced here (RFC 6960 §4.4.1 nonce, §4.2.1 basic response).
_NONCE_OID_TLV = bytes.fromhex("06092b0601050507300102")
_BASIC_OID_TLV = bytes.fromhex("06092b0601050507300101")
_MAX_NONCE_OCTETS = 128  # as app.ca.ocsp: RFC 9654 §2.1
_SEQUENCE, _OCTET_STRING, _BIT_STRING = 0x30, 0x04, 0x03
_REQUEST_EXTENSIONS = 0xA2  # [2] EXPLICIT Extensions in TBSRequest
_RESPONSE_EXTENSIONS = 0xA1  # [1] EXPLICIT Extensions in ResponseData


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at `pos`; only the
    minimal, definite lengths DER allows (ValueError otherwise)."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 3 or pos + count > end or data[pos] == 0:
            raise ValueError("not a DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80:
            raise ValueError("not a minimal DER length")
        pos += count
    if pos + length > end:
        raise ValueError("truncated")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, contents start, end) of each element in data[start:end]."""
    found = []
    while start < end:
        tag, contents, stop = _tlv(data, start, end)
        found.append((tag, start, contents, stop))
        start = stop
    return found


def _encode(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    if size < 0x80:
        return bytes((tag, size)) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + contents


@functools.lru_cache(maxsize=4)
def _generalized_time(moment: datetime) -> bytes:
    """GeneralizedTime, Zulu, whole seconds (RFC 5280 §4.1.2.5.2); the last few are kept,
    since every answer signed within one second carries the same."""
    return _encode(0x18, moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode())


def split_nonce_request(der: bytes) -> tuple[bytes, bytes] | None:
    """(the nonce-less twin of the request, the nonce extension's extnValue as sent) when
    `der` is exactly SEQUENCE { SEQUENCE { requestList, [2] { one nonce extension } } };
    None for any other shape, which the full codec then judges. One pass over the nested
    elements, each of which must end exactly where its parent does (it runs per request)."""
    size = len(der)
    try:
        tag, start, end = _tlv(der, 0, size)  # OCSPRequest; no optionalSignature
        if tag != _SEQUENCE or end != size:
            return None
        tag, start, end = _tlv(der, start, end)  # TBSRequest
        if tag != _SEQUENCE or end != size:
            return None
        tag, _, list_end = _tlv(der, start, end)  # requestList; no version, no requestorName
        if tag != _SEQUENCE:
            return None
        request_list = der[start:list_end]
        tag, start, end = _tlv(der, list_end, size)  # [2] requestExtensions, the last field
        if tag != _REQUEST_EXTENSIONS or end != size:
            return None
        tag, start, end = _tlv(der, start, end)  # Extensions: exactly one Extension
        if tag != _SEQUENCE or end != size:
            return None
        tag, start, end = _tlv(der, start, end)  # Extension: extnID, extnValue (no critical)
        if tag != _SEQUENCE or end != size:
            return None
        oid_end = start + len(_NONCE_OID_TLV)
        if der[start:oid_end] != _NONCE_OID_TLV:
            return None
        tag, start, end = _tlv(der, oid_end, size)  # extnValue
        if tag != _OCTET_STRING or end != size:
            return None
        tag, nonce_start, nonce_end = _tlv(der, start, end)  # the nonce OCTET STRING
        if tag != _OCTET_STRING or nonce_end != size:
            return None
    except ValueError:
        return None
    if not 1 <= nonce_end - nonce_start <= _MAX_NONCE_OCTETS:
        return None
    return _encode(_SEQUENCE, _encode(_SEQUENCE, request_list)), der[start:end]


@dataclass(frozen=True)
class ResponseTemplate:
    """The parts of a signed nonce-less answer that a nonce answer repeats, and its signer."""

    responder_id: bytes  # the ResponderID element, tag included
    responses: bytes  # SEQUENCE OF SingleResponse
    signature_algorithm: bytes
    certs: bytes  # the [0] EXPLICIT certs element, or b""
    signer: Signer

    @property
    def size(self) -> int:
        """Bytes held, for the cache's bound."""
        return len(self.responder_id) + len(self.responses) + len(self.certs) + 64

    @classmethod
    def of(cls, response_der: bytes, signer: Signer) -> ResponseTemplate:
        """Cut a successful, nonce-less OCSPResponse that `signer` signed into its parts.

        Raises:
            ValueError: not such a response.
        """
        response = _children(response_der, 0, len(response_der))[0]
        status, body = _children(response_der, response[2], response[3])
        response_bytes = _children(response_der, body[2], body[3])[0]
        _, octets = _children(response_der, response_bytes[2], response_bytes[3])
        basic_der = response_der[octets[2] : octets[3]]
        basic = _children(basic_der, 0, len(basic_der))[0]
        tbs, algorithm, _signature, *certs = _children(basic_der, basic[2], basic[3])
        fields = _children(basic_der, tbs[2], tbs[3])
        if response_der[status[1] : status[3]] != b"\x0a\x01\x00" or len(fields) != 3:
            raise ValueError("not a successful OCSP answer without extensions")
        responder_id, _produced_at, responses = fields
        return cls(
            responder_id=basic_der[responder_id[1] : responder_id[3]],
            responses=basic_der[responses[1] : responses[3]],
            signature_algorithm=basic_der[algorithm[1] : algorithm[3]],
            certs=basic_der[certs[0][1] : certs[0][3]] if certs else b"",
            signer=signer,
        )

    def tbs_with_nonce(self, produced_at: datetime, nonce_extn_value: bytes) -> bytes:
        """ResponseData as `app.ca.ocsp.build_ocsp_response` encodes it with this nonce."""
        extension = _encode(_SEQUENCE, _NONCE_OID_TLV + _encode(_OCTET_STRING, nonce_extn_value))
        return _encode(
            _SEQUENCE,
            self.responder_id
            + _generalized_time(produced_at)
            + self.responses
            + _encode(_RESPONSE_EXTENSIONS, _encode(_SEQUENCE, extension)),
        )

    def sign_with_nonce(self, produced_at: datetime, nonce_extn_value: bytes) -> bytes:
        """A new DER OCSPResponse: these statuses, producedAt, the nonce echoed verbatim
        (RFC 6960 §4.4.1), signed now."""
        tbs = self.tbs_with_nonce(produced_at, nonce_extn_value)
        signature = _encode(_BIT_STRING, b"\x00" + self.signer.sign_bytes(tbs))
        basic = _encode(_SEQUENCE, tbs + self.signature_algorithm + signature + self.certs)
        response_bytes = _encode(_SEQUENCE, _BASIC_OID_TLV + _encode(_OCTET_STRING, basic))
        return _encode(_SEQUENCE, b"\x0a\x01\x00" + _encode(0xA0, response_bytes))
