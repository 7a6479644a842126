"""A Signer for a key this process cannot read (a key in an HSM): it knows the public key and
a function that signs bytes elsewhere. cryptography signs builders only with its own key
objects, so a builder is signed with a throwaway stand-in key of the same kind (which writes
the right signatureAlgorithm into the TBS), and the stand-in's signature is then replaced."""

from __future__ import annotations

import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from app.ca.keys import PrivateKey, PublicKey
from app.ca.signer import LocalSigner

# message -> signature as X.509 carries it: DER ECDSA-Sig-Value (RFC 3279 §2.2.3), PKCS#1
# v1.5 bytes for RSA, raw 64 bytes for Ed25519; the hash is hash_for_key(public_key).
SignFunction = Callable[[bytes], bytes]

# The stand-in's size does not matter for RSA: the AlgorithmIdentifier (e.g.
# sha256WithRSAEncryption, NULL parameters) is the same for every modulus length.
_STAND_IN_RSA_BITS = 2048


class ExternalSigner:
    """Signs certificates, CRLs and OCSP answers through `sign`; the private key never
    enters this process."""

    def __init__(self, public_key: PublicKey, sign: SignFunction) -> None:
        self._public_key = public_key
        self._sign = sign
        self._stand_in: LocalSigner | None = None
        self._lock = threading.Lock()

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    @property
    def signature_algorithm_oid(self) -> str:
        return self._stand_in_signer().signature_algorithm_oid

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        stand_in = self._stand_in_signer().sign_certificate(builder)
        der = self._resign(stand_in.tbs_certificate_bytes, stand_in.public_bytes(Encoding.DER))
        return x509.load_der_x509_certificate(der)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        stand_in = self._stand_in_signer().sign_crl(builder)
        der = self._resign(stand_in.tbs_certlist_bytes, stand_in.public_bytes(Encoding.DER))
        return x509.load_der_x509_crl(der)

    def sign_bytes(self, data: bytes) -> bytes:
        return self._sign(data)

    def _resign(self, tbs: bytes, stand_in_der: bytes) -> bytes:
        """The stand-in's Certificate/CertificateList with its signatureValue replaced by the
        real signature of the same TBS bytes (RFC 5280 §4.1.1.3, §5.1.1.3)."""
        tbs_item, algorithm, _ = split_signed(stand_in_der)
        if tbs_item != tbs:
            raise ValueError("the TBS is not the first element of the signed structure")
        bit_string = der_tlv(0x03, b"\x00" + self._sign(tbs))  # no unused bits
        return der_tlv(0x30, tbs_item + algorithm + bit_string)

    def _stand_in_signer(self) -> LocalSigner:
        with self._lock:  # made once, on first use
            if self._stand_in is None:
                self._stand_in = LocalSigner(stand_in_key(self._public_key))
            return self._stand_in


def stand_in_key(public_key: PublicKey) -> PrivateKey:
    """A fresh key of the same kind (curve for EC) whose signature is thrown away."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=_STAND_IN_RSA_BITS)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported CA key type {type(public_key).__name__}")


def split_signed(der: bytes) -> tuple[bytes, bytes, bytes]:
    """The three whole TLVs (TBS, AlgorithmIdentifier, BIT STRING) of a DER SEQUENCE."""
    start, end = content_bounds(der, 0)
    if der[0] != 0x30 or end != len(der):
        raise ValueError("not one DER SEQUENCE")
    items = []
    offset = start
    while offset < end:
        _, item_end = content_bounds(der, offset)
        items.append(der[offset:item_end])
        offset = item_end
    if len(items) != 3:
        raise ValueError(f"a signed structure has 3 elements, not {len(items)}")
    return items[0], items[1], items[2]


def content_bounds(der: bytes, offset: int) -> tuple[int, int]:
    """(start of content, end of the TLV) for the DER TLV at `offset` (X.690 §8.1.3)."""
    first = der[offset + 1]
    if first < 0x80:
        return offset + 2, offset + 2 + first
    count = first & 0x7F
    length = int.from_bytes(der[offset + 2 : offset + 2 + count], "big")
    start = offset + 2 + count
    return start, start + length


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a definite length (short form below 128 bytes, X.690 §8.1.3.4)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content
