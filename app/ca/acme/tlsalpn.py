"""The tls-alpn-01 challenge's certificate rule (RFC 8737 §3): exactly one SAN, the
identifier, and a critical id-pe-acmeIdentifier holding SHA-256 of the key authorization."""

from __future__ import annotations

import hashlib
import ipaddress

from cryptography import x509

ACME_TLS_ALPN = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def server_name_for(identifier_type: str, value: str) -> str:
    """The SNI to send: the name, or for an IP the reverse-mapping name (RFC 8738 §6)."""
    if identifier_type == "ip":
        return ipaddress.ip_address(value).reverse_pointer
    return value


def check_tls_alpn01_certificate(
    der: bytes, identifier_type: str, value: str, key_auth: str
) -> None:
    """Raises: ValueError: naming what is wrong with the certificate."""
    certificate = x509.load_der_x509_certificate(der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound as exc:
        raise ValueError(f"the certificate lacks an extension: {exc}") from exc
    expected_name: x509.GeneralName = (
        x509.IPAddress(ipaddress.ip_address(value))
        if identifier_type == "ip"
        else x509.DNSName(value)
    )
    if list(san) != [expected_name]:
        raise ValueError(f"the certificate's SANs must be exactly {value}")
    if not extension.critical:
        raise ValueError("the acmeIdentifier extension must be critical")
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    digest = hashlib.sha256(key_auth.encode()).digest()
    if extension.value.value != b"\x04\x20" + digest:  # DER OCTET STRING of 32 bytes
        raise ValueError("the acmeIdentifier does not hold the key authorization's digest")
