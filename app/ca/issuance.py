"""Building certificates: roots, issuing CAs and leaves as unsigned builders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from app.ca.keys import PublicKey
from app.ca.names import RequestedNames
from app.ca.profiles import Profile

# Clients with slightly slow clocks must accept a fresh certificate.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class Issuer:
    """What a leaf needs of the CA that signs it."""

    ca_id: str
    certificate: x509.Certificate


@dataclass(frozen=True)
class ValidityWindow:
    not_before: datetime
    not_after: datetime


# SPIFFE-style trust domain of the caller URIs in client certificates (MINTCA_TRUST_DOMAIN).
DEFAULT_TRUST_DOMAIN = "mintca.internal"


@dataclass(frozen=True)
class Endpoints:
    """URLs written into every leaf (from MINTCA_PUBLIC_URL), and the trust domain of the
    caller URIs written into client certificates (MINTCA_TRUST_DOMAIN)."""

    base_url: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    def crl(self, ca_id: str) -> str:
        return f"{self.base_url}/crl/{ca_id}.crl"

    def delta_crl(self, ca_id: str) -> str:
        return f"{self.base_url}/crl/{ca_id}-delta.crl"

    def ocsp(self) -> str:
        return f"{self.base_url}/ocsp"

    def ca_issuers(self, ca_id: str) -> str:
        return f"{self.base_url}/ca/{ca_id}.crt"


def pem_bundle(*certificates: x509.Certificate) -> bytes:
    """Certificates as concatenated PEM, in the order given (leaf first for a chain)."""
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def ca_id_for(public_key: PublicKey) -> str:
    """The stable CA identifier: hex of the key's SHA-1 subject key identifier (RFC 5280
    §4.2.1.2 method 1). It is written into every certificate, so it never changes."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()


def leaf_window(now: datetime, validity: timedelta, issuer: x509.Certificate) -> ValidityWindow:
    """Backdated notBefore; notAfter never past the issuing CA's."""
    return ValidityWindow(now - BACKDATE, min(now + validity, issuer.not_valid_after_utc))


def key_usage(*, ca: bool, key_encipherment: bool) -> x509.KeyUsage:
    """keyEncipherment only for an RSA leaf (RSA key transport); CAs sign certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_usage(public_key: PublicKey, *, ca: bool) -> x509.KeyUsage:
    return key_usage(ca=ca, key_encipherment=isinstance(public_key, rsa.RSAPublicKey))


def authority_key_identifier(issuer: Issuer) -> x509.AuthorityKeyIdentifier:
    """The issuing CA's own subject key identifier, as every leaf it signs names it."""
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )


def distribution_extensions(
    ca_id: str, endpoints: Endpoints, *, ocsp: bool = True
) -> list[x509.ExtensionType]:
    """Where relying parties find the issuer's CRL, OCSP responder and certificate. Without
    `ocsp` (a CA under an offline root, which answers no OCSP) only the CRL says its status."""
    access = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(endpoints.ocsp())
        ),
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(endpoints.ca_issuers(ca_id)),
        ),
    ]
    return [
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(endpoints.crl(ca_id))],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        x509.AuthorityInformationAccess(access if ocsp else access[1:]),
    ]


def build_ca_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issuer | None,
    window: ValidityWindow,
    serial_number: int,
    path_length: int | None,
    endpoints: Endpoints | None = None,
    ocsp: bool = True,
) -> x509.CertificateBuilder:
    """A root (issuer None, self-signed) or an issuing CA under `issuer`; with `endpoints`, an
    issuing CA points at its root's CRL and OCSP, so `-crl_check_all` style checks work."""
    issuer_cert = issuer.certificate if issuer is not None else None
    issuer_name = subject if issuer_cert is None else issuer_cert.subject
    authority_key = public_key if issuer_cert is None else issuer_cert.public_key()
    if issuer_cert is not None:  # an issuing CA never outlives its root
        window = ValidityWindow(
            window.not_before, min(window.not_after, issuer_cert.not_valid_after_utc)
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(window.not_before)
        .not_valid_after(window.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(public_key, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key),  # type: ignore[arg-type]  # Ed25519 is accepted at runtime
            critical=False,
        )
    )
    if issuer is not None and endpoints is not None:
        for extension in distribution_extensions(issuer.ca_id, endpoints, ocsp=ocsp):
            builder = builder.add_extension(extension, critical=False)
    return builder


def build_leaf(
    *,
    public_key: PublicKey,
    names: RequestedNames,
    profile: Profile,
    issuer: Issuer,
    window: ValidityWindow,
    serial_number: int,
    endpoints: Endpoints,
) -> x509.CertificateBuilder:
    """Every extension comes from the profile; the CSR gives only the key and approved names.
    The reference for app.ca.leaf_der, which writes the same bytes faster (tests compare)."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names.common_name)] if names.common_name else []
    )
    sans = names.san_entries(cn_is_host=profile.serves_tls)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(window.not_before)
        .not_valid_after(window.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(public_key, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(profile.extended_key_usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
    )
    for extension in distribution_extensions(issuer.ca_id, endpoints):
        builder = builder.add_extension(extension, critical=False)
    if sans:
        # RFC 5280 §4.2.1.6: critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
    if profile.ocsp_no_check:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder
