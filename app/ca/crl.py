"""Building full and delta CRLs (RFC 5280 §5) from revocation entries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from app.ca.crl_der import OMITTED_REASONS


@dataclass(frozen=True)
class RevokedEntry:
    serial_number: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None
    invalidity_date: datetime | None = None


def build_revoked_certificate(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial_number)
        .revocation_date(entry.revoked_at)
    )
    if entry.reason not in OMITTED_REASONS:
        assert entry.reason is not None
        builder = builder.add_extension(x509.CRLReason(entry.reason), critical=False)
    if entry.invalidity_date is not None:
        builder = builder.add_extension(x509.InvalidityDate(entry.invalidity_date), critical=False)
    return builder.build()


def crl_extensions(
    *,
    issuer: x509.Certificate,
    number: int,
    delta_base: int | None = None,
    delta_url: str | None = None,
) -> list[x509.Extension[x509.ExtensionType]]:
    """AKI and CRLNumber, then DeltaCRLIndicator(delta_base) for a delta CRL (RFC 5280
    §5.2.4) or FreshestCRL → `delta_url` for a full one (§5.2.6)."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    extensions: list[x509.Extension[x509.ExtensionType]] = [
        x509.Extension(
            x509.AuthorityKeyIdentifier.oid,
            False,
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
        ),
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
    ]
    if delta_base is not None:
        # RFC 5280 §5.2.4: the delta CRL indicator MUST be critical.
        extensions.append(
            x509.Extension(x509.DeltaCRLIndicator.oid, True, x509.DeltaCRLIndicator(delta_base))
        )
    elif delta_url is not None:
        extensions.append(
            x509.Extension(
                x509.FreshestCRL.oid,
                False,
                x509.FreshestCRL(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(delta_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
            )
        )
    return extensions


def build_crl(
    *,
    issuer: x509.Certificate,
    number: int,
    this_update: datetime,
    next_update: datetime,
    entries: Iterable[RevokedEntry],
    delta_base: int | None = None,
    delta_url: str | None = None,
) -> x509.CertificateRevocationListBuilder:
    """A full CRL (delta_base None; FreshestCRL points at `delta_url`) or a delta CRL
    carrying DeltaCRLIndicator(delta_base), with cryptography's builder: the reference that
    app.ca.crl_der's hand encoding is tested against (it is quadratic in the entries)."""
    extensions = crl_extensions(
        issuer=issuer, number=number, delta_base=delta_base, delta_url=delta_url
    )
    # Entries go to the constructor: add_revoked_certificate() copies the list on every call.
    return x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=[build_revoked_certificate(entry) for entry in entries],
    )
