"""Certificate profiles: a profile decides every extension; a CSR only asks for names."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.ca.names import RequestedNames
from app.errors import NameNotAllowedError, ProfileViolationError


@dataclass(frozen=True)
class Profile:
    name: str
    extended_key_usages: tuple[x509.ObjectIdentifier, ...]
    default_validity: timedelta = timedelta(days=30)
    max_validity: timedelta = timedelta(days=397)
    requires_host_name: bool = False
    ocsp_no_check: bool = False
    enrollable: bool = True  # reachable with a token; `ocsp` certificates are MintCA's own

    @property
    def names_caller(self) -> bool:
        """clientAuth only (client, admin, operator, auditor): the certificate names a caller,
        not a host, and carries a SAN saying who (see with_caller_identity)."""
        return self.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH,)

    @property
    def serves_tls(self) -> bool:
        """serverAuth: its CN names a host, and is copied into the SANs."""
        return ExtendedKeyUsageOID.SERVER_AUTH in self.extended_key_usages


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("server", (ExtendedKeyUsageOID.SERVER_AUTH,), requires_host_name=True),
        Profile("client", (ExtendedKeyUsageOID.CLIENT_AUTH,)),
        Profile("peer", (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)),
        Profile("admin", (ExtendedKeyUsageOID.CLIENT_AUTH,), default_validity=timedelta(days=90)),
        Profile(
            "operator", (ExtendedKeyUsageOID.CLIENT_AUTH,), default_validity=timedelta(days=90)
        ),
        Profile("auditor", (ExtendedKeyUsageOID.CLIENT_AUTH,), default_validity=timedelta(days=90)),
        Profile(
            "ocsp",
            (ExtendedKeyUsageOID.OCSP_SIGNING,),
            default_validity=timedelta(days=7),
            max_validity=timedelta(days=30),
            ocsp_no_check=True,
            enrollable=False,
        ),
    )
}
DEFAULT_PROFILE = "peer"
# Profiles that grant a role on the mtls listener; only an admin may hand them out.
ROLE_PROFILES = ("auditor", "operator", "admin")


def get_profile(name: str) -> Profile:
    """Raises:
    ProfileViolationError: no such profile."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileViolationError(
            f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None


def check_csr_requests(csr: x509.CertificateSigningRequest, profile: Profile) -> None:
    """Refuse CSRs that ask for more than the profile gives (never silently a CA certificate).

    Raises:
        ProfileViolationError: CA:TRUE, keyCertSign/cRLSign, or an EKU outside the profile.
    """
    for extension in csr.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise ProfileViolationError("the CSR asks for CA:TRUE; MintCA issues only leaves")
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise ProfileViolationError("the CSR asks for keyCertSign or cRLSign")
        if isinstance(value, x509.ExtendedKeyUsage):
            extra = [oid for oid in value if oid not in profile.extended_key_usages]
            if extra:
                names = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in extra)
                raise ProfileViolationError(
                    f"the CSR asks for extended key usages the profile {profile.name!r} "
                    f"does not give: {names}"
                )


def check_names_fit_profile(names: RequestedNames, profile: Profile) -> None:
    """Raises:
    ProfileViolationError: a server certificate with no DNS or IP name."""
    if profile.requires_host_name and not any(
        isinstance(entry, x509.DNSName | x509.IPAddress)
        for entry in names.san_entries(cn_is_host=profile.serves_tls)
    ):
        raise ProfileViolationError(
            f"profile {profile.name!r} needs at least one DNS or IP subjectAltName"
        )


# A SPIFFE ID path segment: letters, digits, `.`, `-`, `_` (SPIFFE ID spec §2.2), not `.`/`..`.
_PATH_SEGMENT = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9._-]{1,128}\Z")


def caller_uri(trust_domain: str, profile: Profile, common_name: str) -> str:
    return f"spiffe://{trust_domain}/{profile.name}/{common_name}"


def with_caller_identity(
    names: RequestedNames, profile: Profile, *, trust_domain: str
) -> RequestedNames:
    """Names for a client-authenticating certificate whose CSR gives only a CN: strict
    verifiers (cryptography's client verifier, SPIFFE and Envoy peers) identify callers by
    SAN only and refuse a leaf without one, so the approved CN also becomes the URI SAN
    `spiffe://<trust_domain>/<profile>/<CN>`. A CSR that names SANs keeps exactly those.

    Raises:
        ProfileViolationError: a CN that cannot be a SPIFFE path segment (give a SAN instead).
    """
    if not profile.names_caller or names.dns or names.ips or names.uris or names.emails:
        return names
    common_name = names.common_name or ""
    if not _PATH_SEGMENT.match(common_name):
        raise ProfileViolationError(
            f"a {profile.name!r} certificate names its caller in a URI SAN derived from the CN; "
            f"the CN {common_name!r} may hold only letters, digits, '.', '-' and '_' "
            "(or put the caller's name in a subjectAltName)"
        )
    return replace(names, uris=(caller_uri(trust_domain, profile, common_name),))


def check_trust_domain_names(names: RequestedNames, profile: Profile, *, trust_domain: str) -> None:
    """A URI in MintCA's trust domain whose first segment is a profile name (as derived by
    with_caller_identity) belongs to certificates of that profile only: a token cannot mint a
    `client` certificate that calls itself `spiffe://<domain>/admin/...`.

    Raises:
        NameNotAllowedError: such a URI on a certificate of another profile."""
    prefix = f"spiffe://{trust_domain}/"
    for uri in names.uris:
        if uri.lower().startswith(prefix):
            segment = uri[len(prefix) :].split("/", 1)[0]
            if segment in PROFILES and segment != profile.name:
                raise NameNotAllowedError(
                    f"{uri!r} names a {segment!r} caller of MintCA's trust domain; "
                    f"a {profile.name!r} certificate cannot carry it"
                )
