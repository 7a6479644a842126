"""The Signer: the only thing that touches a CA private key. An HSM is a second Signer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from app.ca.keys import PrivateKey, PublicKey
from app.errors import OfflineKeyError

# Signature algorithm identifiers for structures built by hand (OCSP BasicOCSPResponse).
_ECDSA_OIDS = {
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}
_RSA_OIDS = {
    "sha256": "1.2.840.113549.1.1.11",
    "sha384": "1.2.840.113549.1.1.12",
    "sha512": "1.2.840.113549.1.1.13",
}
ED25519_OID = "1.3.101.112"


class Signer(Protocol):
    @property
    def public_key(self) -> PublicKey: ...

    @property
    def signature_algorithm_oid(self) -> str:
        """Dotted OID of the AlgorithmIdentifier for signatures made by `sign_bytes`."""
        ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...

    def sign_bytes(self, data: bytes) -> bytes: ...


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def hash_for_key(key: PrivateKey | PublicKey) -> SignatureHash | None:
    """SHA-256 for P-256 and RSA, SHA-384 for P-384, SHA-512 for P-521, none for Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        by_size: dict[int, SignatureHash] = {384: hashes.SHA384(), 521: hashes.SHA512()}
        return by_size.get(key.curve.key_size, hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return hashes.SHA256()
    return None


class LocalSigner:
    """Signs with a private key held in this process (decrypted from the database at start)."""

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key
        self._hash = hash_for_key(private_key)
        # Chosen once: every nonce OCSP answer signs (app.ca.ocsp_template), and the ABC
        # isinstance checks cost as much as a tenth of a P-256 signature.
        self._sign_bytes = _bytes_signer(private_key, self._hash)

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    @property
    def signature_algorithm_oid(self) -> str:
        if self._hash is None:
            return ED25519_OID
        table = _ECDSA_OIDS if isinstance(self._key, ec.EllipticCurvePrivateKey) else _RSA_OIDS
        return table[self._hash.name]

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, self._hash)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, self._hash)

    def sign_bytes(self, data: bytes) -> bytes:
        return self._sign_bytes(data)

    def sign_parts(self, parts: Sequence[bytes | bytearray]) -> bytes:
        """`sign_bytes` of the parts joined, without joining them: hashed one after the other
        and signed as a digest (a million-entry CRL is 50 MB; a copy costs as much as the
        hash). Ed25519 signs the message itself (RFC 8032 PureEdDSA), so it is joined."""
        key = self._key
        if self._hash is None:
            return self.sign_bytes(b"".join(parts))
        digest = hashes.Hash(self._hash)
        for part in parts:
            digest.update(part)
        value = digest.finalize()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(value, ec.ECDSA(Prehashed(self._hash)))
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(value, padding.PKCS1v15(), Prehashed(self._hash))


def _bytes_signer(key: PrivateKey, hash_: SignatureHash | None) -> Callable[[bytes], bytes]:
    """A function signing bytes with `key`: Ed25519, ECDSA or RSA PKCS#1 v1.5 with `hash_`."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    assert hash_ is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return functools.partial(key.sign, signature_algorithm=ec.ECDSA(hash_))
    assert isinstance(key, rsa.RSAPrivateKey)
    return functools.partial(key.sign, padding=padding.PKCS1v15(), algorithm=hash_)


class OfflineSigner:
    """A CA whose key MintCA does not hold (an offline root): it knows the public key, and
    every signature it is asked for is refused, so nothing signs with it by accident."""

    def __init__(self, public_key: PublicKey) -> None:
        self._public_key = public_key

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    @property
    def signature_algorithm_oid(self) -> str:
        raise self._refuse()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        raise self._refuse()

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        raise self._refuse()

    def sign_bytes(self, data: bytes) -> bytes:
        raise self._refuse()

    @staticmethod
    def _refuse() -> OfflineKeyError:
        return OfflineKeyError(
            "this CA's key is offline; sign locally with `--root-key FILE` "
            "(e.g. `mintca ca rotate --root-key FILE`)"
        )


def sign_parts(signer: Signer, parts: Sequence[bytes | bytearray]) -> bytes:
    """The signature of the parts joined: hashed in place by a key held here, joined for any
    other signer (an HSM or an external signer takes the whole message)."""
    if isinstance(signer, LocalSigner):
        return signer.sign_parts(parts)
    return signer.sign_bytes(b"".join(parts))
