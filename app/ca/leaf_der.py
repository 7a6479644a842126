"""Leaf certificates encoded by hand (RFC 5280 §4.1). Every leaf one issuing CA signs for one
profile shares most of its TBSCertificate: the signature algorithm, the issuer's name and the
extensions that come from the CA and the profile. `LeafTemplate` holds those as DER, made once;
a leaf then costs its own few fields and one signature. cryptography's CertificateBuilder
encodes everything again for every leaf, which was 3/4 of the X.509 work of a P-256
enrollment (the signature is the rest).

The bytes are those app.ca.issuance.build_leaf gives the builder to write for the same inputs
(tests compare them), so build_leaf stays the reference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from app.ca.crl_der import (
    encode_algorithm_identifier,
    encode_extension,
    encode_extension_type,
    encode_oid,
    encode_time,
    tlv,
)
from app.ca.external import content_bounds
from app.ca.issuance import (
    Endpoints,
    Issuer,
    ValidityWindow,
    authority_key_identifier,
    distribution_extensions,
    key_usage,
)
from app.ca.keys import PublicKey
from app.ca.names import RequestedNames
from app.ca.profiles import Profile
from app.ca.signer import Signer

_VERSION_3 = bytes.fromhex("a003020102")  # version [0] EXPLICIT Version DEFAULT v1: v3(2)
_OID_SUBJECT_KEY_IDENTIFIER = encode_oid("2.5.29.14")
_OID_SUBJECT_ALT_NAME = encode_oid("2.5.29.17")
_EMPTY_NAME = bytes.fromhex("3000")


@dataclass(frozen=True)
class LeafTemplate:
    """What every leaf of one issuing CA and profile shares, as DER, in build_leaf's order."""

    algorithm: bytes  # signatureAlgorithm: in the TBS and after it
    issuer: bytes  # the CA's subject Name
    basic_constraints: bytes
    key_usage: dict[bool, bytes]  # by "the leaf's key is RSA"
    extended_key_usage: bytes
    from_issuer: bytes  # authority key identifier, CRL distribution point, AIA
    ocsp_no_check: bytes  # empty unless the profile has it
    cn_is_host: bool


@lru_cache(maxsize=64)
def leaf_template(
    issuer: Issuer, profile: Profile, endpoints: Endpoints, algorithm_oid: str
) -> LeafTemplate:
    """Made once per CA, profile and signature algorithm (a rotation brings a new issuer)."""
    return LeafTemplate(
        algorithm=encode_algorithm_identifier(algorithm_oid),
        issuer=issuer.certificate.subject.public_bytes(),
        basic_constraints=encode_extension_type(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ),
        key_usage={
            is_rsa: encode_extension_type(
                key_usage(ca=False, key_encipherment=is_rsa), critical=True
            )
            for is_rsa in (False, True)
        },
        extended_key_usage=encode_extension_type(
            x509.ExtendedKeyUsage(list(profile.extended_key_usages))
        ),
        from_issuer=b"".join(
            encode_extension_type(extension)
            for extension in (
                authority_key_identifier(issuer),
                *distribution_extensions(issuer.ca_id, endpoints),
            )
        ),
        ocsp_no_check=encode_extension_type(x509.OCSPNoCheck()) if profile.ocsp_no_check else b"",
        cn_is_host=profile.serves_tls,
    )


def encode_leaf_tbs(
    template: LeafTemplate,
    *,
    public_key: PublicKey,
    names: RequestedNames,
    window: ValidityWindow,
    serial_number: int,
) -> bytes:
    """The TBSCertificate build_leaf describes, for this key, these names and this window."""
    subject, alt_names = _encode_names(names, template.cn_is_host)
    key_info = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    extensions = (
        template.basic_constraints,
        template.key_usage[isinstance(public_key, rsa.RSAPublicKey)],
        template.extended_key_usage,
        encode_extension(_OID_SUBJECT_KEY_IDENTIFIER, tlv(0x04, _key_identifier(key_info))),
        template.from_issuer,
        alt_names,
        template.ocsp_no_check,
    )
    serial = serial_number.to_bytes((serial_number.bit_length() + 8) // 8, "big")
    validity = _encode_time(window.not_before) + _encode_time(window.not_after)
    return tlv(
        0x30,
        b"".join(
            (
                _VERSION_3,
                tlv(0x02, serial),
                template.algorithm,
                template.issuer,
                tlv(0x30, validity),
                subject,
                key_info,
                tlv(0xA3, tlv(0x30, b"".join(extensions))),
            )
        ),
    )


@lru_cache(maxsize=1024)  # a service enrolls and renews the same names again and again
def _encode_names(names: RequestedNames, cn_is_host: bool) -> tuple[bytes, bytes]:
    """(the subject Name, the subjectAltName extension or nothing) for these names."""
    cn = names.common_name
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]).public_bytes()
        if cn
        else _EMPTY_NAME
    )
    sans = names.san_entries(cn_is_host=cn_is_host)
    if not sans:
        return subject, b""
    # RFC 5280 §4.2.1.6: critical when the subject is empty.
    value = x509.SubjectAlternativeName(sans).public_bytes()
    return subject, encode_extension(_OID_SUBJECT_ALT_NAME, value, critical=not cn)


def _encode_time(value: datetime) -> bytes:
    return _encode_second(value.replace(microsecond=0))


@lru_cache(maxsize=8)  # leaves signed within one second share their times
def _encode_second(value: datetime) -> bytes:
    return encode_time(value)


def sign_leaf_tbs(template: LeafTemplate, tbs: bytes, signer: Signer) -> x509.Certificate:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }."""
    signature = tlv(0x03, b"\x00" + signer.sign_bytes(tbs))  # no unused bits
    return x509.load_der_x509_certificate(tlv(0x30, tbs + template.algorithm + signature))


def _key_identifier(key_info: bytes) -> bytes:
    """RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (without
    its unused-bits octet), as x509.SubjectKeyIdentifier.from_public_key computes it."""
    start, _ = content_bounds(key_info, 0)
    _, algorithm_end = content_bounds(key_info, start)
    key_start, key_end = content_bounds(key_info, algorithm_end)
    return hashlib.sha1(key_info[key_start + 1 : key_end]).digest()  # noqa: S324  # RFC 5280's method
