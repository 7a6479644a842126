"""CRLs encoded by hand (RFC 5280 §5.1): entries are DER bytes made once and kept, so a CRL of
a million entries is one join, one signature and a few headers — not a million Python objects
passed one by one through cryptography's CertificateRevocationListBuilder.

The bytes are those cryptography's builder writes for the same inputs (tests compare them).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from cryptography import x509

# RFC 5280 §5.3.1: the reason code SHOULD be absent rather than `unspecified`.
# (The one place this is decided: the served CRLs and the reference builder in app.ca.crl. A
# change here needs the stored entries re-encoded: certificates.crl_entry, see migration 0003.)
OMITTED_REASONS = (None, x509.ReasonFlags.unspecified)
# RFC 5280 reason names (what the API and the database use) to cryptography's flags.
REASON_BY_NAME: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
# CRLReason ::= ENUMERATED (RFC 5280 §5.3.1)
_REASON_CODES = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}
_OID_CRL_REASON = bytes.fromhex("0603551d15")  # id-ce-cRLReasons
_OID_INVALIDITY_DATE = bytes.fromhex("0603551d18")  # id-ce-invalidityDate
_VERSION_2 = bytes.fromhex("020101")  # Version ::= INTEGER { v2(1) }
# RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
_UTC_TIME_LIMIT = 2050
# Signature algorithms whose AlgorithmIdentifier carries NULL parameters (RSA, RFC 4055 §5)
# and those that omit them (ECDSA, RFC 5758 §3.2; Ed25519, RFC 8410 §3).
_NULL_PARAMETERS = frozenset(
    {"1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13"}
)
_ABSENT_PARAMETERS = frozenset(
    {"1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4", "1.3.101.112"}
)


def header(tag: int, size: int) -> bytes:
    """The tag and definite length of a DER value of `size` octets (X.690 §8.1.3, §10.1)."""
    if size < 0x80:
        return bytes((tag, size))
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length


def tlv(tag: int, content: bytes) -> bytes:
    return header(tag, len(content)) + content


def _seconds(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("CRL times must be timezone-aware")
    return value.astimezone(UTC)


def encode_time(value: datetime) -> bytes:
    """Time ::= UTCTime | GeneralizedTime, Zulu with seconds and no fractions (§4.1.2.5)."""
    at = _seconds(value)
    if at.year < _UTC_TIME_LIMIT:
        return tlv(0x17, at.strftime("%y%m%d%H%M%SZ").encode())
    return encode_generalized_time(at)


def encode_generalized_time(value: datetime) -> bytes:
    return tlv(0x18, f"{time_digits(value)}Z".encode())


def encode_extension(oid: bytes, value: bytes, *, critical: bool = False) -> bytes:
    # Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING };
    # DER leaves out a FALSE that equals the default (X.690 §11.5).
    flag = b"\x01\x01\xff" if critical else b""
    return tlv(0x30, oid + flag + tlv(0x04, value))


# Each entry's CRLReason extension, encoded once per reason.
_REASON_EXTENSIONS = {
    reason: encode_extension(_OID_CRL_REASON, tlv(0x0A, bytes((code,))))
    for reason, code in _REASON_CODES.items()
    if reason not in OMITTED_REASONS
}


def time_digits(value: datetime) -> str:
    """YYYYMMDDHHMMSS of an aware datetime in UTC (fractions dropped, §4.1.2.5)."""
    at = _seconds(value)
    return f"{at.year:04d}{at:%m%d%H%M%S}"


def encode_revoked_entry(
    serial_number: int,
    revoked_at: datetime,
    reason: x509.ReasonFlags | None,
    invalidity_date: datetime | None = None,
) -> bytes:
    """One revokedCertificates element: serial, revocationDate and the entry extensions
    (CRLReason, then InvalidityDate), §5.3."""
    return _encode_entry(
        format(serial_number, "x"),
        time_digits(revoked_at),
        reason,
        time_digits(invalidity_date) if invalidity_date is not None else None,
    )


def _encode_entry(
    serial_hex: str,
    revoked_digits: str,
    reason: x509.ReasonFlags | None,
    invalidity_digits: str | None = None,
) -> bytes:
    """`encode_revoked_entry` from a hex serial and UTC times as YYYYMMDDHHMMSS digits.

    Raises:
        ValueError: not a hex serial, or times that are not 14 digits."""
    if len(revoked_digits) != 14 or (
        invalidity_digits is not None and len(invalidity_digits) != 14
    ):
        raise ValueError("CRL entry times must be YYYYMMDDHHMMSS")
    serial = bytes.fromhex(serial_hex if len(serial_hex) % 2 == 0 else "0" + serial_hex)
    if serial[0] & 0x80:
        serial = b"\x00" + serial  # a positive INTEGER (X.690 §8.3.2)
    if revoked_digits < "2050":  # §4.1.2.5: UTCTime through 2049
        time = b"\x17\x0d" + revoked_digits[2:].encode() + b"Z"
    else:
        time = b"\x18\x0f" + revoked_digits.encode() + b"Z"
    extensions = _REASON_EXTENSIONS.get(reason, b"") if reason is not None else b""
    if invalidity_digits is not None:
        # §5.3.2: InvalidityDate is always GeneralizedTime.
        value = b"\x18\x0f" + invalidity_digits.encode() + b"Z"
        extensions += encode_extension(_OID_INVALIDITY_DATE, value)
    body = header(0x02, len(serial)) + serial + time
    if extensions:
        body += tlv(0x30, extensions)
    return tlv(0x30, body)


@functools.lru_cache(maxsize=16)  # a handful of algorithms; every CRL and leaf asks
def encode_algorithm_identifier(oid: str) -> bytes:
    """Raises:
    ValueError: a signature algorithm MintCA's signers never use."""
    if oid in _NULL_PARAMETERS:
        value = {"algorithm": oid, "parameters": asn1_core.Null()}
    elif oid in _ABSENT_PARAMETERS:
        value = {"algorithm": oid}
    else:
        raise ValueError(f"no AlgorithmIdentifier encoding known for {oid}")
    return bytes(asn1_algos.SignedDigestAlgorithm(value).dump())


def encode_crl_extensions(extensions: Iterable[x509.Extension[x509.ExtensionType]]) -> bytes:
    """crlExtensions [0] EXPLICIT Extensions, in the order given."""
    encoded = b"".join(encode_extension_type(e.value, critical=e.critical) for e in extensions)
    return tlv(0xA0, tlv(0x30, encoded))


def encode_extension_type(value: x509.ExtensionType, *, critical: bool = False) -> bytes:
    """One Extension from cryptography's value of it (its OID and DER)."""
    return encode_extension(
        encode_oid(value.oid.dotted_string), value.public_bytes(), critical=critical
    )


def encode_oid(dotted: str) -> bytes:
    return bytes(asn1_core.ObjectIdentifier(dotted).dump())


def build_tbs_cert_list(
    *,
    issuer: x509.Name,
    signature_algorithm_oid: str,
    this_update: datetime,
    next_update: datetime,
    entries: Collection[bytes],
    extensions: Iterable[x509.Extension[x509.ExtensionType]],
) -> bytes:
    """TBSCertList (§5.1.2) around pre-encoded entries; the revokedCertificates field is
    absent when there are none (§5.1.2.6)."""
    return b"".join(
        tbs_cert_list_parts(
            issuer=issuer,
            signature_algorithm_oid=signature_algorithm_oid,
            this_update=this_update,
            next_update=next_update,
            revoked=[b"".join(entries)],
            extensions=extensions,
        )
    )


def tbs_cert_list_parts(
    *,
    issuer: x509.Name,
    signature_algorithm_oid: str,
    this_update: datetime,
    next_update: datetime,
    revoked: Sequence[bytes],
    extensions: Iterable[x509.Extension[x509.ExtensionType]],
) -> list[bytes]:
    """The TBSCertList as [everything before the entries, *revoked, everything after]:
    `revoked` are runs of joined entries (~50 MB for a million), passed on uncopied so the
    caller hashes and stores them as they are. No entries: no revokedCertificates field at
    all (§5.1.2.6)."""
    inner = b"".join(
        (
            _VERSION_2,
            encode_algorithm_identifier(signature_algorithm_oid),
            issuer.public_bytes(),
            encode_time(this_update),
            encode_time(next_update),
        )
    )
    tail = encode_crl_extensions(extensions)
    size = sum(map(len, revoked))
    if size:
        inner += header(0x30, size)
    total = len(inner) + size + len(tail)
    return [header(0x30, total) + inner, *(run for run in revoked if run), tail]


def certificate_list_parts(
    tbs_parts: list[bytes], signature_algorithm_oid: str, signature: bytes
) -> list[bytes]:
    """CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }, as
    parts to join (the TBSCertList's own parts are not copied here)."""
    tail = encode_algorithm_identifier(signature_algorithm_oid) + tlv(0x03, b"\x00" + signature)
    size = sum(len(part) for part in tbs_parts) + len(tail)
    return [header(0x30, size), *tbs_parts, tail]


def serial_key(serial_hex: str) -> bytes:
    """The contents of an entry's serial INTEGER (X.690 §8.3: minimal two's complement, a
    leading zero octet when the high bit is set), as `encode_revoked_entry` writes it."""
    number = int(serial_hex, 16)
    return number.to_bytes((number.bit_length() + 8) // 8, "big")


def entry_spans(run: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, serial_key) of each revokedCertificates element in `run`, joined entries
    as this module writes them (definite lengths, serial first).

    Raises:
        ValueError: `run` is not a run of such entries."""
    at, size = 0, len(run)
    while at < size:
        start = at
        if run[at] != 0x30:
            raise ValueError(f"no CRL entry at offset {at}")
        body, length = _length(run, at + 1)
        end = body + length
        if end > size or run[body] != 0x02:
            raise ValueError(f"truncated CRL entry at offset {start}")
        serial_at, serial_size = _length(run, body + 1)
        yield start, end, run[serial_at : serial_at + serial_size]
        at = end


def serial_keys(run: bytes) -> list[bytes]:
    """The serial keys of every entry in `run` (the loop of `entry_spans`, inlined for the
    short lengths every MintCA entry has: a million entries are read at start-up)."""
    keys: list[bytes] = []
    at, size = 0, len(run)
    append = keys.append
    while at < size:
        length = run[at + 1]
        if length & 0x80 or run[at + 3] & 0x80 or run[at] != 0x30 or run[at + 2] != 0x02:
            keys.extend(key for _, _, key in entry_spans(run[at:]))
            break
        append(run[at + 4 : at + 4 + run[at + 3]])
        at += 2 + length
    if at > size:
        raise ValueError("truncated CRL entry at the end")
    return keys


def _length(run: bytes, at: int) -> tuple[int, int]:
    """(where the contents start, their length) from the length octets at `at` (X.690
    §8.1.3)."""
    first = run[at]
    if first < 0x80:
        return at + 1, first
    count = first & 0x7F
    return at + 1 + count, int.from_bytes(run[at + 1 : at + 1 + count], "big")


def _sequence_of_parts(*parts: bytes) -> bytes:
    return b"".join((header(0x30, sum(len(p) for p in parts)), *parts))


def build_certificate_list(tbs: bytes, signature_algorithm_oid: str, signature: bytes) -> bytes:
    """CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }."""
    bit_string = tlv(0x03, b"\x00" + signature)
    return _sequence_of_parts(tbs, encode_algorithm_identifier(signature_algorithm_oid), bit_string)
