"""Queries on the `audit_log` table and its chain head: the append under the head's lock, the
filtered newest-first listing, and the oldest-first walk that verification reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from app.ca.audit_chain import ChainEntry, entry_hash
from app.db.models import AuditChainRecord, AuditRecord

HEAD_ID = 1


@dataclass(frozen=True)
class PendingEntry:
    """An entry recorded in a transaction, chained when the transaction commits."""

    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor: str | None = None  # substring
    target: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


# Built once: they run in every write transaction that audits, and building a statement
# costs more than executing it (Core on the session's connection, no ORM objects).
_LOCK_HEAD = (
    select(AuditChainRecord.last_id, AuditChainRecord.last_hash)
    .where(AuditChainRecord.id == HEAD_ID)
    .with_for_update()
)
_MOVE_HEAD = (
    update(cast(Table, AuditChainRecord.__table__))
    .where(AuditChainRecord.id == HEAD_ID)
    .values(last_id=bindparam("new_last_id"), last_hash=bindparam("new_last_hash"))
)
_INSERT_ENTRIES = insert(cast(Table, AuditRecord.__table__))


def lock_head(session: Session) -> tuple[int, str]:
    """The chain head's (last_id, last_hash), its row locked for the rest of the transaction
    (FOR UPDATE on PostgreSQL; on SQLite the write transaction began IMMEDIATE and holds the
    database's write lock)."""
    row = session.connection().execute(_LOCK_HEAD).one_or_none()
    if row is None:
        raise RuntimeError("the audit chain head is missing; run `mintca db upgrade`")
    return int(row[0]), str(row[1])


def append(session: Session, pending: Sequence[PendingEntry]) -> None:
    """Chain and add the entries after the current head. Takes the head's lock: call it last
    in the transaction, so the lock is held only until the commit (and, being every
    transaction's last lock, it is never part of a deadlock)."""
    if not pending:
        return
    last_id, last_hash = lock_head(session)
    rows: list[dict[str, Any]] = []
    for item in pending:
        entry = ChainEntry(
            id=last_id + 1,
            at=item.at,
            actor=item.actor,
            action=item.action,
            target=item.target,
            details=item.details,
            prev_hash=last_hash,
        )
        digest = entry_hash(entry)
        rows.append(
            {
                "id": entry.id,
                "at": entry.at,
                "actor": entry.actor,
                "action": entry.action,
                "target": entry.target,
                "details": entry.details,
                "prev_hash": entry.prev_hash,
                "hash": digest,
            }
        )
        last_id, last_hash = entry.id, digest
    # One executemany for the whole batch (a group commit chains many entries at once).
    connection = session.connection()
    connection.execute(_INSERT_ENTRIES, rows)
    connection.execute(_MOVE_HEAD, {"new_last_id": last_id, "new_last_hash": last_hash})


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def newest(
    session: Session, *, where: AuditFilter, before_id: int | None, limit: int
) -> list[AuditRecord]:
    """Entries matching the filter, newest first, below `before_id` (the cursor)."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditRecord.id < before_id)
    if where.action is not None:
        query = query.where(AuditRecord.action == where.action)
    if where.target is not None:
        query = query.where(AuditRecord.target == where.target)
    if where.actor is not None:
        query = query.where(AuditRecord.actor.like(f"%{_escape_like(where.actor)}%", escape="\\"))
    if where.since is not None:
        query = query.where(AuditRecord.at >= where.since)
    if where.until is not None:
        query = query.where(AuditRecord.at < where.until)
    return list(session.scalars(query))


def oldest_after(
    session: Session, *, after_id: int, up_to_id: int, limit: int
) -> list[AuditRecord]:
    """Entries in chain order after `after_id`, up to `up_to_id` (the head when the walk began)."""
    query = (
        select(AuditRecord)
        .where(AuditRecord.id > after_id, AuditRecord.id <= up_to_id)
        .order_by(AuditRecord.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def head(session: Session) -> AuditChainRecord | None:
    return session.get(AuditChainRecord, HEAD_ID)


def newest_id(session: Session) -> int:
    return session.scalar(select(func.max(AuditRecord.id))) or 0
