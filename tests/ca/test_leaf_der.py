"""Leaves encoded by hand (app.ca.leaf_der) are the bytes cryptography's builder writes for
the same inputs (app.ca.issuance.build_leaf): the same TBSCertificate for every issuer and leaf
key type, every profile, every shape of names, serial and validity; the whole certificate for an
Ed25519 issuer (deterministic signatures); and every one verifies under its issuer's key."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.bootstrap import NewCA, create_root
from app.ca.external import ExternalSigner
from app.ca.issuance import Endpoints, Issuer, ValidityWindow, build_leaf
from app.ca.keys import PrivateKey, generate_private_key
from app.ca.leaf_der import encode_leaf_tbs, leaf_template, sign_leaf_tbs
from app.ca.names import RequestedNames
from app.ca.profiles import PROFILES
from app.ca.signer import LocalSigner, Signer

NOW = datetime(2026, 12, 6, 3, 4, 5, 678901, tzinfo=UTC)
ENDPOINTS = Endpoints("http://ca.example.internal:8443", trust_domain="example.internal")
KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "ed25519"]
WINDOW = ValidityWindow(NOW - timedelta(minutes=5), NOW + timedelta(days=30, microseconds=7))

NAMES = [
    pytest.param(RequestedNames("api.example.internal"), id="CN only, copied into the SANs"),
    pytest.param(
        RequestedNames("api.example.internal", dns=("api.example.internal", "*.api.internal")),
        id="CN and DNS SANs",
    ),
    pytest.param(RequestedNames(None, dns=("a.internal",)), id="no CN: critical SAN"),
    pytest.param(RequestedNames("10.1.2.3"), id="IPv4 CN"),
    pytest.param(RequestedNames(None, ips=("10.0.0.1", "2001:db8::1")), id="IP SANs"),
    pytest.param(
        RequestedNames(
            "worker-7",
            uris=("spiffe://example.internal/worker-7",),
            emails=("ops@example.internal",),
        ),
        id="caller CN, URI and email SANs",
    ),
    pytest.param(RequestedNames("Zürich ünicode caller"), id="non-ASCII CN"),
    pytest.param(RequestedNames("x" * 64), id="64-character CN"),
]


@functools.cache
def issuer(key_type: str) -> NewCA:
    return create_root(name="Leaf DER", key_type=key_type, now=NOW - timedelta(days=1))


@functools.cache
def leaf_key(key_type: str) -> PrivateKey:
    return generate_private_key(key_type)


def by_hand(
    authority: NewCA,
    signer: Signer,
    *,
    key_type: str,
    names: RequestedNames,
    profile: str,
    window: ValidityWindow = WINDOW,
    serial: int = 0x1234,
) -> tuple[bytes, x509.Certificate]:
    template = leaf_template(
        Issuer(authority.ca_id, authority.certificate),
        PROFILES[profile],
        ENDPOINTS,
        signer.signature_algorithm_oid,
    )
    tbs = encode_leaf_tbs(
        template,
        public_key=leaf_key(key_type).public_key(),
        names=names,
        window=window,
        serial_number=serial,
    )
    return tbs, sign_leaf_tbs(template, tbs, signer)


def by_cryptography(
    authority: NewCA,
    *,
    key_type: str,
    names: RequestedNames,
    profile: str,
    window: ValidityWindow = WINDOW,
    serial: int = 0x1234,
) -> x509.Certificate:
    builder = build_leaf(
        public_key=leaf_key(key_type).public_key(),
        names=names,
        profile=PROFILES[profile],
        issuer=Issuer(authority.ca_id, authority.certificate),
        window=window,
        serial_number=serial,
        endpoints=ENDPOINTS,
    )
    return LocalSigner(authority.private_key).sign_certificate(builder)  # type: ignore[arg-type]  # a root made here has its key


HOST = RequestedNames("api.example.internal")


def both_ways(
    authority: NewCA,
    *,
    signer: Signer | None = None,
    key_type: str = "ec-p256",
    names: RequestedNames = HOST,
    profile: str = "server",
    window: ValidityWindow = WINDOW,
    serial: int = 0x1234,
) -> tuple[bytes, x509.Certificate, x509.Certificate]:
    """(TBS and certificate by hand, the builder's certificate) for the same inputs; signed
    by the authority's own key unless `signer` is given."""
    if signer is None:
        signer = LocalSigner(authority.private_key)  # type: ignore[arg-type]  # a root made here has its key
    tbs, certificate = by_hand(
        authority,
        signer,
        key_type=key_type,
        names=names,
        profile=profile,
        window=window,
        serial=serial,
    )
    reference = by_cryptography(
        authority, key_type=key_type, names=names, profile=profile, window=window, serial=serial
    )
    return tbs, certificate, reference


def assert_same(tbs: bytes, certificate: x509.Certificate, reference: x509.Certificate) -> None:
    assert tbs == reference.tbs_certificate_bytes, (
        f"\n{tbs.hex()}\n{reference.tbs_certificate_bytes.hex()}"
    )
    assert certificate.tbs_certificate_bytes == tbs
    assert certificate.signature_algorithm_oid == reference.signature_algorithm_oid


@pytest.mark.parametrize("issuer_type", KEY_TYPES)
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_same_bytes_for_every_key_type(issuer_type: str, key_type: str) -> None:
    authority = issuer(issuer_type)
    tbs, certificate, reference = both_ways(authority, key_type=key_type)

    assert_same(tbs, certificate, reference)
    certificate.verify_directly_issued_by(authority.certificate)
    if issuer_type == "ed25519":  # deterministic signatures: the whole certificate is the same
        assert certificate.public_bytes(Encoding.DER) == reference.public_bytes(Encoding.DER)


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("names", NAMES)
def test_same_bytes_for_every_profile_and_names(profile: str, names: RequestedNames) -> None:
    tbs, certificate, reference = both_ways(issuer("ec-p256"), names=names, profile=profile)

    assert_same(tbs, certificate, reference)


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x8000, 2**159 - 1, 2**158 + 12345],
    ids=["1", "0x7f", "0x80: a leading zero", "0xff", "0x8000", "20 octets", "20 octets, low"],
)
def test_same_bytes_for_every_serial_length(serial: int) -> None:
    tbs, certificate, reference = both_ways(issuer("ec-p256"), serial=serial)

    assert_same(tbs, certificate, reference)
    assert certificate.serial_number == serial


@pytest.mark.parametrize(
    "window",
    [
        ValidityWindow(
            datetime(2049, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2050, 1, 1, tzinfo=UTC),
        ),
        ValidityWindow(
            datetime(2051, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
        ),
    ],
    ids=["UTCTime to GeneralizedTime at 2050", "GeneralizedTime both"],
)
def test_same_bytes_for_times_on_both_sides_of_2050(window: ValidityWindow) -> None:
    tbs, certificate, reference = both_ways(issuer("ec-p256"), window=window)

    assert_same(tbs, certificate, reference)


def test_an_external_signer_signs_the_same_tbs() -> None:
    """A key this process cannot read (an HSM) signs the template's TBS through sign_bytes."""
    authority = issuer("ec-p384")
    local = LocalSigner(authority.private_key)  # type: ignore[arg-type]  # a root made here has its key
    external = ExternalSigner(local.public_key, local.sign_bytes)
    names = RequestedNames(None, dns=("hsm.internal",))
    tbs, certificate, reference = both_ways(
        authority, signer=external, key_type="rsa-2048", names=names, profile="peer"
    )

    assert_same(tbs, certificate, reference)
    certificate.verify_directly_issued_by(authority.certificate)
