"""The subscriber key policy, key generation, and KEK wrapping of CA keys at rest."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519

from app.ca.keys import (
    KEK_BYTES,
    KEY_TYPES,
    PrivateKey,
    check_public_key,
    encode_kek,
    generate_kek,
    generate_private_key,
    parse_kek,
    private_key_pem,
    unwrap_private_key,
    wrap_private_key,
)
from app.errors import UnsupportedKeyError


def rsa_public(bits: int, e: int = 65537) -> rsa.RSAPublicKey:
    """An RSA public key of exactly `bits` bits without generating primes (the policy reads
    only the size and exponent, so any odd modulus of that size will do)."""
    modulus = (1 << (bits - 1)) | (1 << (bits // 2)) | 1
    return rsa.RSAPublicNumbers(e, modulus).public_key()


def ec_public(curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(curve).public_key()


@functools.cache
def dsa_public() -> dsa.DSAPublicKey:
    return dsa.generate_private_key(1024).public_key()


ACCEPTED: list[object] = [
    pytest.param(lambda: rsa_public(2048), id="rsa 2048"),
    pytest.param(lambda: rsa_public(3072), id="rsa 3072"),
    pytest.param(lambda: rsa_public(4096), id="rsa 4096"),
    pytest.param(lambda: rsa_public(8192), id="rsa 8192"),
    pytest.param(lambda: ec_public(ec.SECP256R1()), id="ec p-256"),
    pytest.param(lambda: ec_public(ec.SECP384R1()), id="ec p-384"),
    pytest.param(lambda: ec_public(ec.SECP521R1()), id="ec p-521"),
    pytest.param(lambda: ed25519.Ed25519PrivateKey.generate().public_key(), id="ed25519"),
]
REFUSED: list[object] = [
    pytest.param(lambda: rsa_public(1024), "2048 to 8192", id="rsa 1024"),
    pytest.param(lambda: rsa_public(2047), "2048 to 8192", id="rsa 2047"),
    pytest.param(lambda: rsa_public(8200), "2048 to 8192", id="rsa 8200"),
    pytest.param(lambda: rsa_public(2048, e=3), "65537", id="rsa e=3"),
    pytest.param(lambda: rsa_public(2048, e=65539), "65537", id="rsa e=65539"),
    pytest.param(lambda: ec_public(ec.SECP256K1()), "secp256k1", id="ec secp256k1"),
    pytest.param(lambda: ec_public(ec.SECP224R1()), "secp224r1", id="ec p-224"),
    pytest.param(lambda: ec_public(ec.BrainpoolP256R1()), "brainpool", id="ec brainpool"),
    pytest.param(lambda: ed448.Ed448PrivateKey.generate().public_key(), "Ed448", id="ed448"),
    pytest.param(dsa_public, "DSA", id="dsa"),
    pytest.param(lambda: x25519.X25519PrivateKey.generate().public_key(), "X25519", id="x25519"),
    pytest.param(lambda: b"not a key", "bytes", id="not a key"),
]


@pytest.mark.parametrize("make", ACCEPTED)
def test_key_policy_accepts(make: Callable[[], object]) -> None:
    key = make()
    assert check_public_key(key) is key


@pytest.mark.parametrize(("make", "message"), REFUSED)
def test_key_policy_refuses(make: Callable[[], object], message: str) -> None:
    with pytest.raises(UnsupportedKeyError, match=message) as raised:
        check_public_key(make())

    assert raised.value.status == 400


def test_rsa_helper_makes_keys_of_the_stated_size() -> None:
    assert [rsa_public(b).key_size for b in (1024, 2047, 2048, 8192, 8200)] == [
        1024,
        2047,
        2048,
        8192,
        8200,
    ]


# --- Generation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_type", [t for t in KEY_TYPES if t not in ("rsa-3072", "rsa-4096")]
)  # the larger RSA sizes only cost time
def test_generated_keys_pass_the_policy(key_type: str) -> None:
    key = generate_private_key(key_type)

    check_public_key(key.public_key())
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----"), "unencrypted PKCS#8"
    assert serialization.load_pem_private_key(pem, None).public_key() == key.public_key()


def test_unknown_key_type() -> None:
    with pytest.raises(ValueError, match="unknown key type"):
        generate_private_key("rsa-1024")


# --- The KEK and wrapped CA keys ------------------------------------------------------------------


def test_kek_encoding_round_trip() -> None:
    kek = generate_kek()

    assert len(kek) == KEK_BYTES == 32
    assert parse_kek(encode_kek(kek)) == kek
    assert parse_kek(f"  {encode_kek(kek)}\n") == kek, "a file with a newline"
    assert generate_kek() != kek


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not base64 at all!", id="not base64"),
        pytest.param(base64.b64encode(b"k" * 16).decode(), id="16 bytes"),
        pytest.param(base64.b64encode(b"k" * 33).decode(), id="33 bytes"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_kek_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="KEK"):
        parse_kek(text)


def same_key(a: PrivateKey, b: PrivateKey) -> bool:
    raw = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    return a.private_bytes(*raw, none) == b.private_bytes(*raw, none)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "ed25519", "rsa-2048"])
def test_wrap_unwrap_round_trip(key_type: str) -> None:
    key = generate_private_key(key_type)
    kek = generate_kek()

    blob = wrap_private_key(key, kek=kek, label="ca-1")

    assert same_key(unwrap_private_key(blob, kek=kek, label="ca-1"), key)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert der not in blob, "the key must not be stored in the clear"
    assert wrap_private_key(key, kek=kek, label="ca-1") != blob, "a fresh nonce each time"


@pytest.fixture(scope="module")
def wrapped() -> tuple[bytes, bytes]:
    kek = generate_kek()
    return kek, wrap_private_key(generate_private_key("ec-p256"), kek=kek, label="ca-1")


def flip(blob: bytes, index: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: flip(b, 0), id="nonce"),
        pytest.param(lambda b: flip(b, 20), id="ciphertext"),
        pytest.param(lambda b: flip(b, len(b) - 1), id="tag"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b + b"\x00", id="extended"),
        pytest.param(lambda b: b[:12], id="nonce only"),
    ],
)
def test_tampered_blob_does_not_unwrap(
    tamper: Callable[[bytes], bytes], wrapped: tuple[bytes, bytes]
) -> None:
    kek, blob = wrapped

    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_private_key(tamper(blob), kek=kek, label="ca-1")


def test_blob_moved_to_another_ca_does_not_unwrap(wrapped: tuple[bytes, bytes]) -> None:
    kek, blob = wrapped

    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_private_key(blob, kek=kek, label="ca-2")


def test_wrong_kek_does_not_unwrap(wrapped: tuple[bytes, bytes]) -> None:
    _, blob = wrapped

    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_private_key(blob, kek=generate_kek(), label="ca-1")
