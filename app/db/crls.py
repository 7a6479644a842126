"""Queries on the `crls` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
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


# A full CRL kept only as a possible delta base: (id, number, this_update, next_update).
BaseRow = tuple[int, int, datetime, datetime]


def superseded_full(session: Session, ca_id: str, number: int) -> list[BaseRow]:
    """The CA's full CRLs older than `number`, oldest first (metadata only, never the DER)."""
    rows = session.execute(
        select(CRLRecord.id, CRLRecord.number, CRLRecord.this_update, CRLRecord.next_update)
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta.is_(False), CRLRecord.number < number)
        .order_by(CRLRecord.number)
    )
    return [(i, n, t, u) for i, n, t, u in rows]


def delete_superseded_deltas(session: Session, ca_id: str, number: int) -> None:
    session.execute(
        delete(CRLRecord).where(
            CRLRecord.ca_id == ca_id, CRLRecord.is_delta.is_(True), CRLRecord.number < number
        )
    )


def delete_ids(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(delete(CRLRecord).where(CRLRecord.id.in_(ids)))


def clear_superseded_der(session: Session, ca_id: str, number: int) -> None:
    """Empty the DER of full CRLs older than `number`: only the latest one is ever served,
    the older rows stay as delta bases (number and nextUpdate) only."""
    session.execute(
        update(CRLRecord)
        .where(
            CRLRecord.ca_id == ca_id,
            CRLRecord.is_delta.is_(False),
            CRLRecord.number < number,
            func.length(CRLRecord.der) > 0,
        )
        .values(der=b"")
    )


def latest_next_update(session: Session, ca_id: str) -> datetime | None:
    """nextUpdate of the latest full CRL, without loading its DER."""
    return session.scalar(
        select(CRLRecord.next_update)
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta.is_(False))
        .order_by(CRLRecord.number.desc())
        .limit(1)
    )
