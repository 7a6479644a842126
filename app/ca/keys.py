"""Key generation, the key policy for subscriber keys, and KEK wrapping of CA keys at rest."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Re-exported: the names live in app.ca.key_types, which the CLI imports without cryptography.
from app.ca.key_types import KEY_TYPES as KEY_TYPES
from app.ca.key_types import KeyType as KeyType
from app.errors import UnsupportedKeyError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
KEK_BYTES = 32
_NONCE_BYTES = 12
_WRAP_MAGIC = b"MKW1"
_KEK_ID_BYTES = 8
_HEADER_BYTES = len(_WRAP_MAGIC) + _KEK_ID_BYTES


def generate_private_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type in ("rsa-2048", "rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def check_public_key(key: object) -> PublicKey:
    """Accept RSA 2048-8192 with e=65537, EC P-256/P-384/P-521 and Ed25519.

    Raises:
        UnsupportedKeyError: any other key, curve, size or exponent.
    """
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise UnsupportedKeyError(
                f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {key.key_size}"
            )
        if numbers.e != 65537:
            raise UnsupportedKeyError(f"RSA public exponent must be 65537, not {numbers.e}")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise UnsupportedKeyError(
                f"EC curve {key.curve.name} is not accepted; use P-256, P-384 or P-521"
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise UnsupportedKeyError(
        f"{type(key).__name__.removeprefix('_')} keys are not accepted; "
        "use RSA (2048-8192), EC P-256/P-384/P-521 or Ed25519"
    )


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: only for subscriber and TLS keys written with mode 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_kek() -> bytes:
    return os.urandom(KEK_BYTES)


def encode_kek(kek: bytes) -> str:
    return base64.b64encode(kek).decode()


def parse_kek(text: str) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("the KEK must be base64 of 32 random bytes") from exc
    if len(kek) != KEK_BYTES:
        raise ValueError(f"the KEK must be {KEK_BYTES} bytes, not {len(kek)}")
    return kek


def kek_id(kek: bytes) -> str:
    """A short public name for a KEK (16 hex digits of a SHA-256 over it): written in front of
    every wrapped key, so a process holding several KEKs during a rotation knows which one to
    use, and an error can say which KEK is missing. It reveals nothing about the KEK."""
    return hashlib.sha256(b"mintca kek id\0" + kek).hexdigest()[:16]


def wrapped_kek_id(blob: bytes) -> str | None:
    """The id of the KEK a key is wrapped under; None for keys wrapped before KEK ids."""
    if len(blob) > len(_WRAP_MAGIC) + _KEK_ID_BYTES and blob.startswith(_WRAP_MAGIC):
        return blob[len(_WRAP_MAGIC) : len(_WRAP_MAGIC) + _KEK_ID_BYTES].hex()
    return None


def wrap_private_key(key: PrivateKey, *, kek: bytes, label: str) -> bytes:
    """Encrypt a CA key (PKCS#8 DER) as `wrap_secret` does; `label` is the CA id."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return wrap_secret(der, kek=kek, label=label)


def unwrap_private_key(blob: bytes, *, kek: bytes | Sequence[bytes], label: str) -> PrivateKey:
    """The key `wrap_private_key` wrapped.

    Raises ValueError when no KEK given is the right one or the blob was tampered with."""
    return load_der_private_key(unwrap_secret(blob, kek=kek, label=label), label=label)


def load_der_private_key(der: bytes, *, label: str) -> PrivateKey:
    """An unwrapped PKCS#8 key of an accepted type.

    Raises ValueError: not such a key."""
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, PrivateKey):
        raise ValueError(f"unexpected key type for {label}")
    return key


def wrap_secret(secret: bytes, *, kek: bytes, label: str) -> bytes:
    """Encrypt a secret (a key, an ACME EAB HMAC key) with AES-256-GCM: `MKW1`, the KEK id, a
    nonce, the ciphertext. `label` (the row's identity) and the header are bound as
    associated data, so a ciphertext moved to another row does not decrypt."""
    header = _WRAP_MAGIC + bytes.fromhex(kek_id(kek))
    nonce = os.urandom(_NONCE_BYTES)
    return header + nonce + AESGCM(kek).encrypt(nonce, secret, header + label.encode())


def unwrap_secret(blob: bytes, *, kek: bytes | Sequence[bytes], label: str) -> bytes:
    """Decrypt with the KEK named in the blob, chosen from `kek` (one KEK, or several while a
    rotation is under way). Secrets wrapped before KEK ids existed are tried with each KEK.

    Raises ValueError when no KEK given is the right one or the blob was tampered with."""
    keks = [kek] if isinstance(kek, bytes) else list(kek)
    wanted = wrapped_kek_id(blob)
    if wanted is not None:
        for candidate in keks:
            if kek_id(candidate) == wanted:
                header, rest = blob[:_HEADER_BYTES], blob[_HEADER_BYTES:]
                return _decrypt(candidate, rest, header + label.encode(), label)
    for candidate in keks:  # a blob from before KEK ids (or one whose header was damaged)
        try:
            return _decrypt(candidate, blob, label.encode(), label)
        except ValueError:
            continue
    if wanted is not None and wanted not in {kek_id(k) for k in keks}:
        have = ", ".join(kek_id(k) for k in keks)
        raise ValueError(
            f"cannot decrypt the key of {label}: it is wrapped under KEK {wanted}, "
            f"and this process has KEK {have}"
        )
    raise ValueError(f"cannot decrypt the key of {label}: wrong KEK or damaged row")


def _decrypt(kek: bytes, body: bytes, associated: bytes, label: str) -> bytes:
    try:
        return AESGCM(kek).decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], associated)
    except InvalidTag as exc:
        raise ValueError(f"cannot decrypt the key of {label}: wrong KEK or damaged row") from exc


def load_private_key_pem(data: bytes) -> PrivateKey:
    """An unencrypted PEM private key of an accepted type (an offline root's key file).

    Raises:
        UnsupportedKeyError: not a PEM private key, or not of an accepted type.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UnsupportedKeyError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, PrivateKey):
        raise UnsupportedKeyError(f"{type(key).__name__} keys are not CA keys here")
    return key
