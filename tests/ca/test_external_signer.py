"""ExternalSigner: certificates and CRLs signed by a function that holds the key elsewhere
(an HSM) verify with the CA's public key and carry the right signature algorithm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.x509.oid import NameOID

from app.ca.external import ExternalSigner, der_tlv, split_signed
from app.ca.keys import PrivateKey, generate_private_key
from app.ca.signer import LocalSigner

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External CA")])


def external(key: PrivateKey) -> tuple[ExternalSigner, list[bytes]]:
    """An ExternalSigner whose `sign` is a software key; it records what it was asked."""
    asked: list[bytes] = []
    local = LocalSigner(key)

    def sign(data: bytes) -> bytes:
        asked.append(data)
        return local.sign_bytes(data)

    return ExternalSigner(key.public_key(), sign), asked


def ca_builder(key: PrivateKey) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )


def crl_builder() -> x509.CertificateRevocationListBuilder:
    revoked = x509.RevokedCertificateBuilder().serial_number(1234).revocation_date(NOW).build()
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(NOW)
        .next_update(NOW + timedelta(hours=1))
        .add_revoked_certificate(revoked)
    )


KEY_CASES = [
    pytest.param("ec-p256", "1.2.840.10045.4.3.2", id="ec-p256/ecdsa-with-SHA256"),
    pytest.param("ec-p384", "1.2.840.10045.4.3.3", id="ec-p384/ecdsa-with-SHA384"),
    pytest.param("rsa-2048", "1.2.840.113549.1.1.11", id="rsa-2048/sha256WithRSAEncryption"),
    pytest.param("ed25519", "1.3.101.112", id="ed25519"),
]


@pytest.mark.parametrize(("key_type", "oid"), KEY_CASES)
def test_certificate_signed_through_the_function_verifies(key_type: str, oid: str) -> None:
    key = generate_private_key(key_type)
    signer, asked = external(key)

    certificate = signer.sign_certificate(ca_builder(key))

    certificate.verify_directly_issued_by(certificate)  # raises unless the signature is good
    assert certificate.signature_algorithm_oid.dotted_string == oid
    assert signer.signature_algorithm_oid == oid
    assert asked == [certificate.tbs_certificate_bytes]


@pytest.mark.parametrize(("key_type", "oid"), KEY_CASES)
def test_crl_signed_through_the_function_verifies(key_type: str, oid: str) -> None:
    key = generate_private_key(key_type)
    signer, asked = external(key)

    crl = signer.sign_crl(crl_builder())

    assert crl.is_signature_valid(key.public_key())  # type: ignore[arg-type]  # CA key types
    assert crl.signature_algorithm_oid.dotted_string == oid
    assert asked == [crl.tbs_certlist_bytes]
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None


def test_a_wrong_signature_from_the_function_does_not_verify() -> None:
    """The signer passes on what the token returns; a token signing with another key gives
    a certificate that fails verification (so the tests' verification means something)."""
    key = generate_private_key("ec-p256")
    other = ec.generate_private_key(ec.SECP256R1())
    signer = ExternalSigner(key.public_key(), lambda data: other.sign(data, ec.ECDSA(SHA256())))

    certificate = signer.sign_certificate(ca_builder(key))

    with pytest.raises(InvalidSignature):
        certificate.verify_directly_issued_by(certificate)


def test_sign_bytes_is_the_function() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer, asked = external(key)
    signature = signer.sign_bytes(b"an OCSP tbsResponseData")
    key.public_key().verify(signature, b"an OCSP tbsResponseData", padding.PKCS1v15(), SHA256())
    assert asked == [b"an OCSP tbsResponseData"]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 70_000], ids=lambda n: f"{n} bytes")
def test_der_lengths_round_trip(size: int) -> None:
    """Short and long form lengths (X.690 §8.1.3) read back as the three elements."""
    items = [der_tlv(0x30, b"a" * size), der_tlv(0x30, b"\x06\x00"), der_tlv(0x03, b"\x00x")]
    assert split_signed(der_tlv(0x30, b"".join(items))) == tuple(items)
