"""Queries on the `crls` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import CRLRecord


def latest(session: Session, ca_id: str, *, delta: bool) -> CRLRecord | None:
    return session.scalars(
        select(CRLRecord)
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta == delta)
        .order_by(CRLRecord.number.desc())
        .limit(1)
    ).one_or_none()


def oldest_current_full_number(session: Session, ca_id: str, now: datetime) -> int | None:
    """The smallest number of a full CRL still within its validity: any relying party
    holding a current full CRL holds this one or a newer one, so it is the delta's base."""
    return session.scalar(
        select(func.min(CRLRecord.number)).where(
            CRLRecord.ca_id == ca_id,
            CRLRecord.is_delta.is_(False),
            CRLRecord.next_update > now,
        )
    )
