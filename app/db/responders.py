"""Queries on the `ocsp_responders` table."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ResponderRecord


def newest_for(session: Session, ca_id: str) -> ResponderRecord | None:
    return session.scalars(
        select(ResponderRecord)
        .where(ResponderRecord.ca_id == ca_id)
        .order_by(ResponderRecord.not_after.desc(), ResponderRecord.id.desc())
        .limit(1)
    ).one_or_none()


def lock_all(session: Session) -> list[ResponderRecord]:
    """Every responder row, locked for the rest of the transaction (KEK rotation)."""
    query = select(ResponderRecord).order_by(ResponderRecord.id).with_for_update()
    return list(session.scalars(query.execution_options(populate_existing=True)))
