"""Queries on the `tokens` table, including the atomic spend of one use."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import TokenRecord


def find_by_hash(session: Session, secret_hash: str) -> TokenRecord | None:
    return session.scalars(
        select(TokenRecord).where(TokenRecord.secret_hash == secret_hash)
    ).one_or_none()


def spend_use(session: Session, token_id: str, now: datetime) -> bool:
    """Spend one use in a single conditional UPDATE, so two requests racing for the last use
    cannot both win (the database serialises the row). True when this call spent it."""
    result = session.execute(
        update(TokenRecord)
        .where(
            TokenRecord.id == token_id,
            TokenRecord.uses_left > 0,
            TokenRecord.expires_at > now,
        )
        .values(uses_left=TokenRecord.uses_left - 1)
        .returning(TokenRecord.id)
    )
    return result.first() is not None
