"""Aggregate queries on the ACME tables for /metrics, read at scrape time like app.db.stats,
so every worker and replica sharing the database reports the same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Mapped, Session
from sqlalchemy.sql.expression import ColumnElement

from app.db.models import (
    AcmeAccountRecord,
    AcmeAuthorizationRecord,
    AcmeChallengeRecord,
    AcmeOrderRecord,
    CertificateRecord,
)


@dataclass(frozen=True)
class AcmeCounts:
    accounts: dict[str, int]  # by status
    orders: dict[str, int]  # by status as clients read it (expired pending/ready: invalid)
    authorizations: dict[str, int]  # by status as clients read it (expired pending: expired)
    challenges: dict[tuple[str, str], int]  # by (type, status)
    certificates: list[tuple[str, str, int]]  # (ca_id, profile, issued through ACME)


def acme_counts(session: Session, *, now: datetime) -> AcmeCounts:
    """Five GROUP BYs, each one scan of its table (the certificates are joined by primary key)."""
    return AcmeCounts(
        accounts=_by_status(session, AcmeAccountRecord.status),
        orders=_orders(session, now),
        authorizations=_authorizations(session, now),
        challenges=_challenges(session),
        certificates=_certificates(session),
    )


def _by_status(session: Session, status: ColumnElement[str] | Mapped[str]) -> dict[str, int]:
    rows = session.execute(select(status, func.count()).group_by(status))
    return {str(value): count for value, count in rows}


def _orders(session: Session, now: datetime) -> dict[str, int]:
    # RFC 8555 §7.1.6: an order that expires before it is valid reads `invalid` (the API says
    # so without writing it), so the metric says what clients see.
    status = case(
        (
            and_(
                AcmeOrderRecord.status.in_(("pending", "ready")),
                AcmeOrderRecord.expires_at <= now,
            ),
            "invalid",
        ),
        else_=AcmeOrderRecord.status,
    )
    return _by_status(session, status)


def _authorizations(session: Session, now: datetime) -> dict[str, int]:
    status = case(
        (
            and_(
                AcmeAuthorizationRecord.status == "pending",
                AcmeAuthorizationRecord.expires_at <= now,
            ),
            "expired",
        ),
        else_=AcmeAuthorizationRecord.status,
    )
    return _by_status(session, status)


def _challenges(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(AcmeChallengeRecord.type, AcmeChallengeRecord.status, func.count()).group_by(
            AcmeChallengeRecord.type, AcmeChallengeRecord.status
        )
    )
    return {(kind, status): count for kind, status, count in rows}


def _certificates(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(CertificateRecord.ca_id, CertificateRecord.profile, func.count())
        .join(AcmeOrderRecord, AcmeOrderRecord.certificate_serial == CertificateRecord.serial)
        .group_by(CertificateRecord.ca_id, CertificateRecord.profile)
    )
    return [(ca_id, profile, count) for ca_id, profile, count in rows]
