"""Names a CSR asks for, and the token's name rule: exact names or `*.suffix` patterns."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.errors import MalformedCSRError, NameNotAllowedError

# fullmatch, never `$`: `$` also matches before a trailing newline ("x\n.internal").
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Every enrollment asks the predicates below of the same few names (its CN, SANs and the
# token's patterns); each answer depends on the string alone, so the last ones are kept.
_KEPT_ANSWERS = 1024
# X.520 ub-common-name (RFC 5280 Appendix A): a longer CN cannot be encoded in a certificate.
MAX_COMMON_NAME_CHARS = 64
# Names per certificate (CN and SANs): ample for a service, bounded for the signer, the row
# and every relying party that parses the certificate.
MAX_NAMES = 100
MAX_NAME_CHARS = 1024  # a single URI or email SAN (a DNS name stops at 253)
MAX_TOTAL_NAME_CHARS = 16 * 1024  # all names together


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


@functools.lru_cache(maxsize=_KEPT_ANSWERS)
def is_ip(name: str) -> bool:
    # An IPv6 address has a colon and an IPv4 one ends in a digit: a host name is refused
    # without the parser's exception.
    if ":" not in name and not name[-1:].isdigit():
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=_KEPT_ANSWERS)
def is_dns_name(name: str, *, allow_wildcard: bool = True) -> bool:
    labels = name.lower().split(".")
    if allow_wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def has_control_characters(name: str) -> bool:
    """C0 controls, DEL and C1 controls: never part of a name, and a newline in a name lets
    it pass as two lines in logs and in tools that print certificates. A regular expression:
    a character loop in Python cost ~10 us per enrollment."""
    return _CONTROL_CHARACTER.search(name) is not None


def cn_length(value: str) -> int:
    """The length cryptography holds to ub-common-name: UTF-8 bytes, so 40 accented letters
    are 80 and would fail when the certificate is built."""
    return len(value.encode("utf-8", errors="surrogatepass"))


def check_name_limits(names: RequestedNames) -> None:
    """Everything about the names that could make signing or storing fail, checked before
    anything is signed.

    Raises:
        MalformedCSRError: a control character in a name, a CN over 64 characters, more than
            MAX_NAMES names, a name over MAX_NAME_CHARS or all over MAX_TOTAL_NAME_CHARS.
    """
    every = names.all()
    for name in every:
        if has_control_characters(name):
            raise MalformedCSRError(f"a name holds a control character: {name[:80]!r}")
        if len(name) > MAX_NAME_CHARS:
            raise MalformedCSRError(f"a name is longer than {MAX_NAME_CHARS} characters")
    cn = names.common_name
    if cn is not None and not 1 <= cn_length(cn) <= MAX_COMMON_NAME_CHARS:
        raise MalformedCSRError(
            f"the CN must have 1 to {MAX_COMMON_NAME_CHARS} characters (X.520 ub-common-name; "
            f"counted as UTF-8 bytes, as cryptography encodes it), not {cn_length(cn)}"
        )
    if len(every) > MAX_NAMES:
        raise MalformedCSRError(f"{len(every)} names; a certificate carries at most {MAX_NAMES}")
    if sum(len(name) for name in every) > MAX_TOTAL_NAME_CHARS:
        raise MalformedCSRError(f"the names exceed {MAX_TOTAL_NAME_CHARS} characters together")


def read_requested_names(csr: x509.CertificateSigningRequest) -> RequestedNames:
    """Collect CN and SANs.

    Raises:
        MalformedCSRError: a SAN type MintCA does not issue, a malformed name, or names over
            the limits of check_name_limits.
    """
    try:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except UserWarning as exc:
        # cryptography warns about a CN over 64 characters (or a 3-letter country) while it
        # parses the subject; where warnings are errors the warning arrives as this exception.
        raise MalformedCSRError(f"the CN must have 1 to 64 characters: {exc}") from exc
    except ValueError as exc:
        # The subject is parsed on first access: a signed CSR may still carry, e.g., a
        # UTF8String that is not UTF-8 (found by fuzzing; it was a 500).
        raise MalformedCSRError("the CSR's subject cannot be read (malformed DER)") from exc
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
    names = RequestedNames(
        common_name,
        tuple(dict.fromkeys(dns)),
        tuple(dict.fromkeys(ips)),
        tuple(dict.fromkeys(uris)),
        tuple(dict.fromkeys(emails)),
    )
    check_name_limits(names)
    return names


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


@functools.lru_cache(maxsize=_KEPT_ANSWERS)
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
