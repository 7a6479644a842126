"""Names a CSR asks for, and the token's name rule: exact names or `*.suffix` patterns."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.errors import MalformedCSRError, NameNotAllowedError

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class RequestedNames:
    """The subject CN and SANs of a CSR, normalised (DNS lowercase, IPs compressed)."""

    common_name: str | None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    def all(self) -> list[str]:
        names = [*self.dns, *self.ips, *self.uris, *self.emails]
        if self.common_name is not None and self.common_name not in names:
            names.insert(0, self.common_name)
        return names

    def san_entries(self, *, cn_is_host: bool = True) -> list[x509.GeneralName]:
        """SANs for the leaf. For certificates that serve TLS (`cn_is_host`), a CN that is a
        DNS name or IP is copied into the SANs, because clients match host names against SANs
        only (RFC 6125); a client's CN (e.g. `admin`) names a caller, not a host."""
        dns, ips = list(self.dns), list(self.ips)
        cn = self.common_name
        if cn_is_host and cn is not None and cn not in dns and cn not in ips:
            if is_ip(cn):
                ips.insert(0, cn)
            elif is_dns_name(cn):
                dns.insert(0, cn)
        return [
            *(x509.DNSName(name) for name in dns),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
            *(x509.UniformResourceIdentifier(uri) for uri in self.uris),
            *(x509.RFC822Name(email) for email in self.emails),
        ]


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_dns_name(name: str, *, allow_wildcard: bool = True) -> bool:
    labels = name.lower().split(".")
    if allow_wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return len(name) <= 253 and all(_DNS_LABEL.match(label) for label in labels)


def read_requested_names(csr: x509.CertificateSigningRequest) -> RequestedNames:
    """Collect CN and SANs.

    Raises:
        MalformedCSRError: a SAN type MintCA does not issue, or a malformed name.
    """
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value).strip() if cns else None
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    emails: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    for entry in san or []:
        if isinstance(entry, x509.DNSName):
            name = entry.value.lower().rstrip(".")
            if not is_dns_name(name):
                raise MalformedCSRError(f"not a DNS name: {entry.value!r}")
            dns.append(name)
        elif isinstance(entry, x509.IPAddress):
            if not isinstance(entry.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise MalformedCSRError("IP SANs must be addresses, not networks")
            ips.append(entry.value.compressed)
        elif isinstance(entry, x509.UniformResourceIdentifier):
            uris.append(entry.value)
        elif isinstance(entry, x509.RFC822Name):
            emails.append(entry.value)
        else:
            raise MalformedCSRError(f"SAN type {type(entry).__name__} is not issued")
    if common_name is not None and is_dns_name(common_name):
        common_name = common_name.lower().rstrip(".")
    if common_name is None and not (dns or ips or uris or emails):
        raise MalformedCSRError("the CSR names nothing: give a CN or a subjectAltName")
    # A name asked for twice is certified once (dict keeps the CSR's order).
    return RequestedNames(
        common_name,
        tuple(dict.fromkeys(dns)),
        tuple(dict.fromkeys(ips)),
        tuple(dict.fromkeys(uris)),
        tuple(dict.fromkeys(emails)),
    )


def name_allowed(name: str, patterns: list[str]) -> bool:
    """`*.zone` covers any name with one or more labels before `.zone` (not `zone`, not
    `xzone`); a wildcard name in a CSR is allowed only when a pattern lists it exactly."""
    candidate = _normalise(name)
    for pattern in patterns:
        normalised = _normalise(pattern)
        if candidate == normalised:
            return True
        if (
            normalised.startswith("*.")
            and not candidate.startswith("*")
            and not is_ip(candidate)  # patterns are for DNS names; IPs are listed exactly
            and is_dns_name(candidate, allow_wildcard=False)
            and candidate.endswith(normalised[1:])
            and len(candidate) > len(normalised) - 1
        ):
            return True
    return False


def _normalise(name: str) -> str:
    """DNS names compare in lower case, IP addresses in their compressed form."""
    if is_ip(name):
        return ipaddress.ip_address(name).compressed
    return name.lower() if is_dns_name(name) else name


def check_names_allowed(names: RequestedNames, patterns: list[str]) -> None:
    """Raises:
    NameNotAllowedError: naming the first name the token does not allow."""
    for name in names.all():
        if not name_allowed(name, patterns):
            raise NameNotAllowedError(f"the token does not allow the name {name!r}")
