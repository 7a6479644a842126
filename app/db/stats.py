"""Aggregate queries for /metrics: a few GROUP BYs read at scrape time, so every worker and
replica sharing the database reports the same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.db.models import AuditRecord, CARecord, CertificateRecord, CRLRecord

# The audit action of a renewal; its target is the new certificate's serial.
RENEWAL_ACTION = "certificate.renew"


@dataclass(frozen=True)
class CertificateCount:
    ca_id: str
    profile: str
    issued: int
    revoked: int  # revoked now, holds included (an unhold takes one off)


@dataclass(frozen=True)
class CAState:
    ca_id: str
    kind: str
    active: bool
    not_after: datetime
    crl_number: int


@dataclass(frozen=True)
class LatestCRL:
    ca_id: str
    number: int
    this_update: datetime
    next_update: datetime
    size_bytes: int


@dataclass(frozen=True)
class Expiry:
    ca_id: str
    soonest_not_after: datetime | None  # of the certificates still valid (not revoked)
    expiring_soon: int  # valid certificates whose notAfter is before `soon`


def certificate_counts(session: Session) -> list[CertificateCount]:
    """Certificates per (CA, profile): all issued, and those revoked now. One scan."""
    rows = session.execute(
        select(
            CertificateRecord.ca_id,
            CertificateRecord.profile,
            func.count(),
            func.count(CertificateRecord.revoked_at),
        ).group_by(CertificateRecord.ca_id, CertificateRecord.profile)
    )
    return [CertificateCount(*row) for row in rows]


def renewal_counts(session: Session) -> list[tuple[str, str, int]]:
    """(ca_id, profile, renewals) of the certificates issued by renewal, from the audit rows
    that record them (a renewed certificate is an ordinary row of `certificates`)."""
    rows = session.execute(
        select(CertificateRecord.ca_id, CertificateRecord.profile, func.count())
        .join(AuditRecord, AuditRecord.target == CertificateRecord.serial)
        .where(AuditRecord.action == RENEWAL_ACTION)
        .group_by(CertificateRecord.ca_id, CertificateRecord.profile)
    )
    return [(ca_id, profile, count) for ca_id, profile, count in rows]


def ca_states(session: Session) -> list[CAState]:
    rows = session.execute(
        select(CARecord.id, CARecord.kind, CARecord.active, CARecord.not_after, CARecord.crl_number)
    )
    return [CAState(*row) for row in rows]


def latest_full_crls(session: Session) -> list[LatestCRL]:
    """The newest full CRL of each CA, with its size in bytes (not its DER)."""
    newest = (
        select(CRLRecord.ca_id, func.max(CRLRecord.number).label("number"))
        .where(CRLRecord.is_delta.is_(False))
        .group_by(CRLRecord.ca_id)
        .subquery()
    )
    rows = session.execute(
        select(
            CRLRecord.ca_id,
            CRLRecord.number,
            CRLRecord.this_update,
            CRLRecord.next_update,
            func.coalesce(CRLRecord.size, func.length(CRLRecord.der)),
        ).join(
            newest,
            and_(
                CRLRecord.ca_id == newest.c.ca_id,
                CRLRecord.number == newest.c.number,
                CRLRecord.is_delta.is_(False),
            ),
        )
    )
    return [LatestCRL(*row) for row in rows]


def expiries(
    session: Session, *, now: datetime, soon: datetime, exclude_profiles: tuple[str, ...] = ()
) -> list[Expiry]:
    """Per CA, among certificates valid at `now`, not revoked and not of `exclude_profiles`:
    the soonest notAfter and how many end before `soon`."""
    expiring = func.count().filter(CertificateRecord.not_after <= soon)
    rows = session.execute(
        select(CertificateRecord.ca_id, func.min(CertificateRecord.not_after), expiring)
        .where(
            CertificateRecord.revoked_at.is_(None),
            CertificateRecord.not_after > now,
            CertificateRecord.profile.not_in(exclude_profiles),
        )
        .group_by(CertificateRecord.ca_id)
    )
    return [Expiry(ca_id, soonest, count) for ca_id, soonest, count in rows]
