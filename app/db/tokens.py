"""Queries on the `tokens` table, including the atomic spend of one use."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
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
        # No token object is loaded in the session to keep in step: skip the ORM's evaluation.
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


# Built once: these run in every enrollment batch, and building a statement costs more than
# executing it (Core on the session's connection, no ORM objects).
_LOCK_USES = (
    select(TokenRecord.uses_left, TokenRecord.expires_at)
    .where(TokenRecord.id == bindparam("token_id"))
    .with_for_update()
)
_SPEND_USES = (
    update(TokenRecord)
    .where(TokenRecord.id == bindparam("token_id"))
    .values(uses_left=TokenRecord.uses_left - bindparam("count"))
)


def lock_uses(session: Session, token_id: str) -> tuple[int, datetime] | None:
    """(uses_left, expires_at) of a token, its row locked for the rest of the transaction
    (FOR UPDATE on PostgreSQL; on SQLite the write transaction holds the write lock)."""
    row = session.connection().execute(_LOCK_USES, {"token_id": token_id}).first()
    return None if row is None else (row[0], row[1])


def spend_uses(session: Session, token_id: str, count: int) -> None:
    """Spend `count` uses that the caller counted under lock_uses' lock."""
    session.connection().execute(_SPEND_USES, {"token_id": token_id, "count": count})
