"""CRLs encoded by hand (app.ca.crl_der) are the bytes cryptography's builder writes for the
same inputs: the same TBSCertList for every key type, full and delta, every entry shape; the
whole CertificateList for Ed25519 (deterministic signatures); and cryptography loads and
verifies each one."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.bootstrap import NewCA, create_root
from app.ca.crl import RevokedEntry, build_crl, crl_extensions
from app.ca.crl_der import (
    build_certificate_list,
    build_tbs_cert_list,
    certificate_list_parts,
    encode_algorithm_identifier,
    encode_revoked_entry,
    entry_spans,
    header,
    serial_key,
    serial_keys,
    tbs_cert_list_parts,
)
from app.ca.signer import LocalSigner, sign_parts

NOW = datetime(2026, 12, 6, 3, 4, 5, 678901, tzinfo=UTC)
DELTA_URL = "http://ca.example.internal/crl/x-delta.crl"
KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "ed25519"]

ENTRIES = [
    pytest.param([], id="no entries"),
    pytest.param([RevokedEntry(1, NOW, None)], id="serial 1, no reason"),
    pytest.param([RevokedEntry(0x80, NOW, x509.ReasonFlags.unspecified)], id="unspecified, 0x80"),
    pytest.param(
        [RevokedEntry(2**159 - 1, NOW, x509.ReasonFlags.key_compromise, NOW - timedelta(days=3))],
        id="20-octet serial, keyCompromise, invalidity date",
    ),
    pytest.param(
        [
            RevokedEntry(n + 1, NOW - timedelta(seconds=n), reason)
            for n, reason in enumerate(
                [r for r in x509.ReasonFlags if r is not x509.ReasonFlags.unspecified]
            )
        ],
        id="every reason code",
    ),
    pytest.param(
        [RevokedEntry(7, datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC), None)],
        id="GeneralizedTime from 2050",
    ),
    pytest.param(
        [RevokedEntry(n * 7919 + 1, NOW, x509.ReasonFlags.superseded) for n in range(3000)],
        id="3000 entries, long lengths",
    ),
]


@functools.cache
def ca(key_type: str) -> NewCA:
    return create_root(name="CRL DER", key_type=key_type, now=NOW - timedelta(days=1))


def by_hand(
    authority: NewCA, entries: list[RevokedEntry], delta_base: int | None
) -> tuple[bytes, bytes]:
    """(TBSCertList, CertificateList) from app.ca.crl_der."""
    signer = LocalSigner(authority.private_key)
    algorithm = signer.signature_algorithm_oid
    tbs = build_tbs_cert_list(
        issuer=authority.certificate.subject,
        signature_algorithm_oid=algorithm,
        this_update=NOW,
        next_update=NOW + timedelta(hours=24),
        entries=[
            encode_revoked_entry(e.serial_number, e.revoked_at, e.reason, e.invalidity_date)
            for e in entries
        ],
        extensions=crl_extensions(
            issuer=authority.certificate, number=42, delta_base=delta_base, delta_url=DELTA_URL
        ),
    )
    return tbs, build_certificate_list(tbs, algorithm, signer.sign_bytes(tbs))


def by_cryptography(
    authority: NewCA, entries: list[RevokedEntry], delta_base: int | None
) -> x509.CertificateRevocationList:
    builder = build_crl(
        issuer=authority.certificate,
        number=42,
        this_update=NOW,
        next_update=NOW + timedelta(hours=24),
        entries=entries,
        delta_base=delta_base,
        delta_url=DELTA_URL,
    )
    return LocalSigner(authority.private_key).sign_crl(builder)


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("delta_base", [None, 41], ids=["full", "delta"])
@pytest.mark.parametrize("entries", ENTRIES)
def test_same_bytes_as_cryptography(
    key_type: str, delta_base: int | None, entries: list[RevokedEntry]
) -> None:
    authority = ca(key_type)
    tbs, der = by_hand(authority, entries, delta_base)
    reference = by_cryptography(authority, entries, delta_base)

    assert tbs == reference.tbs_certlist_bytes, (
        f"\n{tbs.hex()}\n{reference.tbs_certlist_bytes.hex()}"
    )
    loaded = x509.load_der_x509_crl(der)
    assert loaded.is_signature_valid(authority.certificate.public_key())  # type: ignore[arg-type]  # CA keys only
    assert loaded.signature_algorithm_oid == reference.signature_algorithm_oid
    assert len(loaded) == len(entries)
    if key_type == "ed25519":  # deterministic signatures: the whole document is the same
        assert der == reference.public_bytes(Encoding.DER)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(0, "3000", id="empty"),
        pytest.param(127, "307f", id="short form limit"),
        pytest.param(128, "308180", id="long form, one octet"),
        pytest.param(65536, "3083010000", id="long form, three octets"),
    ],
)
def test_definite_length_header(size: int, expected: str) -> None:
    assert header(0x30, size).hex() == expected


def test_unknown_signature_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="no AlgorithmIdentifier"):
        encode_algorithm_identifier("1.2.840.10040.4.3")  # DSA with SHA-1


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_revoked_entry(1, datetime(2026, 1, 1), None)  # the naive case


# --- a CRL in pieces: entries in runs, hashed piece by piece ---------------------------------


def encoded(entries: list[RevokedEntry]) -> list[bytes]:
    return [
        encode_revoked_entry(e.serial_number, e.revoked_at, e.reason, e.invalidity_date)
        for e in entries
    ]


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("entries", ENTRIES)
def test_pieces_join_to_the_same_tbs_and_verify(key_type: str, entries: list[RevokedEntry]) -> None:
    """Entries split into runs anywhere give the TBSCertList of the joined entries, and the
    signature over the pieces (prehashed, or joined for Ed25519) verifies."""
    authority = ca(key_type)
    ders = encoded(entries)
    runs = [b"".join(ders[i : i + 7]) for i in range(0, len(ders), 7)]
    signer = LocalSigner(authority.private_key)
    algorithm = signer.signature_algorithm_oid
    tbs = tbs_cert_list_parts(
        issuer=authority.certificate.subject,
        signature_algorithm_oid=algorithm,
        this_update=NOW,
        next_update=NOW + timedelta(hours=24),
        revoked=runs,
        extensions=crl_extensions(issuer=authority.certificate, number=42, delta_url=DELTA_URL),
    )
    reference, _ = by_hand(authority, entries, None)
    assert b"".join(tbs) == reference

    der = b"".join(certificate_list_parts(tbs, algorithm, sign_parts(signer, tbs)))
    loaded = x509.load_der_x509_crl(der)
    assert loaded.is_signature_valid(authority.certificate.public_key())  # type: ignore[arg-type]  # CA keys only
    assert loaded.tbs_certlist_bytes == reference
    assert len(loaded) == len(entries)


@pytest.mark.parametrize(
    "serial",
    [
        pytest.param(1, id="1"),
        pytest.param(0x7F, id="0x7f"),
        pytest.param(0x80, id="0x80, a leading zero octet"),
        pytest.param(0xFF00, id="0xff00"),
        pytest.param(2**159 - 1, id="159 bits"),
        pytest.param(2**159, id="160 bits, 21 octets"),
    ],
)
def test_serial_key_is_the_entrys_integer(serial: int) -> None:
    entry = encode_revoked_entry(serial, NOW, x509.ReasonFlags.key_compromise)
    ((start, end, key),) = entry_spans(entry)
    assert (start, end) == (0, len(entry))
    assert key == serial_key(format(serial, "x")) == serial_key(format(serial, "X"))
    assert int.from_bytes(key, "big", signed=True) == serial


def test_entry_spans_and_serial_keys_read_every_entry() -> None:
    """Short and long length forms (an entry with an invalidity date and a 2050 date, a
    hand-made entry of 200 octets) read alike; anything else is refused."""
    ders = encoded(
        [
            RevokedEntry(5, NOW, None),
            RevokedEntry(2**159 - 3, NOW, x509.ReasonFlags.superseded, NOW - timedelta(days=1)),
            RevokedEntry(9, datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC), None),
        ]
    )
    long_entry = header(0x30, 200) + b"\x02\x01\x0b" + b"\x04\x81\xc2" + b"\x00" * 194
    run = b"".join([*ders, long_entry, ders[0]])
    keys = [serial_key(format(n, "x")) for n in (5, 2**159 - 3, 9, 11, 5)]

    assert [key for _, _, key in entry_spans(run)] == keys
    assert serial_keys(run) == keys
    assert [run[s:e] for s, e, _ in entry_spans(run)] == [*ders, long_entry, ders[0]]
    with pytest.raises(ValueError, match="no CRL entry"):
        list(entry_spans(run + b"\x04\x00"))
    with pytest.raises(ValueError, match="truncated"):
        serial_keys(run[:-1])
    with pytest.raises(ValueError, match="truncated"):
        serial_keys(b"".join(ders[:1])[:-1])  # short lengths only
