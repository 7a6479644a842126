"""Reading PKCS#10 CSRs in every form clients send, and checking them (key policy, proof of
possession)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from app.ca.csr import check_csr, load_csr
from app.errors import CSRSignatureError, MalformedCSRError, UnsupportedKeyError

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def make_csr(key: SigningKey | None = None, cn: str = "a.zone") -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


CSR = make_csr()
PEM = CSR.public_bytes(Encoding.PEM).decode()
DER = CSR.public_bytes(Encoding.DER)
LEGACY = PEM.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PEM, id="pem str"),
        pytest.param(PEM.encode(), id="pem bytes"),
        pytest.param(f"Subject: CN=a.zone\nsome notes\n\n{PEM}\ntrailing text\n", id="text around"),
        pytest.param(LEGACY, id="legacy label"),
        pytest.param(f"certtool output\n{LEGACY}done\n", id="legacy label with text around"),
        pytest.param(PEM.replace("\n", "\r\n"), id="crlf"),
        pytest.param(PEM.replace("\n", "\n  ").rstrip(), id="indented lines"),
        pytest.param(DER, id="der"),
        pytest.param(
            PEM + make_csr(cn="b.zone").public_bytes(Encoding.PEM).decode(), id="first of two"
        ),
    ],
)
def test_load_csr(data: str | bytes) -> None:
    assert load_csr(data) == CSR


CERTIFICATE_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + base64.encodebytes(DER).decode()
    + "-----END CERTIFICATE-----\n"
)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param("hello, CA", id="text"),
        pytest.param(b"\x00\x01\x02garbage", id="binary garbage"),
        pytest.param(b"\x30\x03\x02\x01\x00", id="der of something else"),
        pytest.param(DER[: len(DER) // 2], id="truncated der"),
        pytest.param(DER[:-1], id="der one byte short"),
        pytest.param(b"junk" + DER, id="der after junk"),
        pytest.param(PEM.replace(PEM.splitlines()[3], "%%%% not base64 %%%%"), id="pem bad base64"),
        pytest.param(
            PEM.replace(PEM.splitlines()[3], PEM.splitlines()[3][:-4]), id="pem cut short"
        ),
        pytest.param(CERTIFICATE_PEM, id="pem with a certificate label"),
        pytest.param("-----BEGIN CERTIFICATE REQUEST-----\n", id="pem without end"),
        pytest.param(
            "-----BEGIN CERTIFICATE REQUEST-----\n"
            + base64.b64encode(b"no csr here").decode()
            + "\n-----END CERTIFICATE REQUEST-----\n",
            id="pem of something else",
        ),
    ],
)
def test_load_csr_refuses(data: str | bytes) -> None:
    with pytest.raises(MalformedCSRError) as raised:
        load_csr(data)

    assert raised.value.status == 400


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="p-256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p-384"),
        pytest.param(lambda: ed25519.Ed25519PrivateKey.generate(), id="ed25519"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa 2048"),
    ],
)
def test_check_csr_returns_the_subject_key(make_key: Callable[[], SigningKey]) -> None:
    key = make_key()

    assert check_csr(make_csr(key)) == key.public_key()


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ecdsa"),
        pytest.param(lambda: ed25519.Ed25519PrivateKey.generate(), id="ed25519"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa"),
    ],
)
def test_check_csr_refuses_a_broken_signature(make_key: Callable[[], SigningKey]) -> None:
    der = bytearray(make_csr(make_key()).public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the signature is the last field

    with pytest.raises(CSRSignatureError):
        check_csr(load_csr(bytes(der)))


def test_check_csr_refuses_another_keys_signature() -> None:
    """A CSR whose public key is swapped for another: the signature no longer verifies."""
    original = make_csr()
    other = make_csr()
    original_spki = original.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    other_spki = other.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    swapped = original.public_bytes(Encoding.DER).replace(original_spki, other_spki)

    with pytest.raises(CSRSignatureError):
        check_csr(load_csr(swapped))


def test_check_csr_applies_the_key_policy() -> None:
    with pytest.raises(UnsupportedKeyError):
        check_csr(make_csr(ec.generate_private_key(ec.SECP256K1())))  # type: ignore[arg-type]
