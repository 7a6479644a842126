"""Renewal rules: a renewed certificate keeps its predecessor's names, profile and lifetime;
the CSR brings only the key (new or the same) and may not ask for any name it lacks."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.ca.issuance import BACKDATE
from app.ca.names import RequestedNames, read_requested_names
from app.ca.profiles import Profile
from app.errors import NameNotAllowedError


def names_of(certificate: x509.Certificate) -> RequestedNames:
    """The CN and SANs a MintCA certificate carries, as the names to issue again."""
    cns = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = list(
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        san = []
    return RequestedNames(
        str(cns[0].value) if cns else None,
        dns=tuple(e.value for e in san if isinstance(e, x509.DNSName)),
        ips=tuple(
            ipaddress.ip_address(e.value).compressed  # type: ignore[arg-type]  # addresses only
            for e in san
            if isinstance(e, x509.IPAddress)
        ),
        uris=tuple(e.value for e in san if isinstance(e, x509.UniformResourceIdentifier)),
        emails=tuple(e.value for e in san if isinstance(e, x509.RFC822Name)),
    )


def check_csr_names_within(csr: x509.CertificateSigningRequest, kept: RequestedNames) -> None:
    """A renewal CSR may name nothing (an empty subject), or any subset of the names the
    certificate has: asking for another name is an attempt to add it, which only a new
    enrollment with a token may do.

    Raises:
        MalformedCSRError: a malformed name in the CSR.
        NameNotAllowedError: naming the first name the certificate does not carry.
    """
    has_san = any(isinstance(e.value, x509.SubjectAlternativeName) for e in csr.extensions)
    if not has_san and not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        return
    carried = {name.lower() for name in kept.all()}
    for name in read_requested_names(csr).all():
        if name.lower() not in carried:
            raise NameNotAllowedError(
                f"renewal keeps the certificate's names; {name!r} is not one of them "
                "(enroll with a token to add a name)"
            )


def renewal_validity(certificate: x509.Certificate, profile: Profile) -> timedelta:
    """The predecessor's lifetime (as requested: its backdating taken off), within the
    profile's maximum, and at least a day."""
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc - BACKDATE
    return max(timedelta(days=1), min(lifetime, profile.max_validity))
