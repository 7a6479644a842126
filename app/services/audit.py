"""The audit trail: one entry for every issuance and every admin action, in the same
transaction, chained by hash (app.ca.audit_chain) when that transaction commits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.ca.audit_chain import canonical_json
from app.db import audit as audit_queries
from app.db.audit import AuditFilter, PendingEntry
from app.db.engine import Database
from app.db.models import AuditRecord

_PENDING = "mintca_audit_pending"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class ChainHead:
    """The newest entry's id and hash (0 and the genesis hash for an empty chain)."""

    id: int
    hash: str


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to the caller's transaction, so it commits or fails with the action.

    The entry is chained when the transaction commits: the chain head's lock is the last one
    the transaction takes, held only for the commit."""
    # What the JSON column gives back, so the hash is computed over what is stored.
    stored_details = json.loads(canonical_json(details or {}))
    pending: list[PendingEntry] = session.info.setdefault(_PENDING, [])
    pending.append(PendingEntry(at, actor, action, target, stored_details))


@event.listens_for(Session, "before_commit")
def _chain_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.flush()  # the action's own rows first: a constraint failure ends it before the lock
    audit_queries.append(session, pending)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, _previous_transaction: object) -> None:
    session.info.pop(_PENDING, None)


def _entry(r: AuditRecord) -> AuditEntry:
    return AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.details, r.prev_hash, r.hash)


def _aware(value: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class AuditService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def search(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int | None]:
        """Matching entries newest first, and the cursor of the next page (None at the end):
        pass it back as `before_id`."""
        where = AuditFilter(action, actor, target, _aware(since), _aware(until))
        with self._db.read() as session:
            rows = audit_queries.newest(session, where=where, before_id=before_id, limit=limit + 1)
        entries = [_entry(r) for r in rows[:limit]]
        return entries, (entries[-1].id if len(rows) > limit else None)

    def newest(self, *, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        return self.search(before_id=before_id, limit=limit)[0]

    def head(self) -> ChainHead:
        """The chain head. Without its row (deleted), the newest entry with an empty hash,
        so that verification walks every entry and then fails at the newest."""
        with self._db.read() as session:
            row = audit_queries.head(session)
            if row is None:
                return ChainHead(audit_queries.newest_id(session), "")
        return ChainHead(row.last_id, row.last_hash)

    def chain(
        self, *, after_id: int, up_to_id: int, limit: int
    ) -> tuple[list[AuditEntry], int | None]:
        """Entries oldest first (chain order) after `after_id` up to `up_to_id`, with their
        hashes, and the cursor of the next page (None at the end)."""
        with self._db.read() as session:
            rows = audit_queries.oldest_after(
                session, after_id=after_id, up_to_id=up_to_id, limit=limit + 1
            )
        entries = [_entry(r) for r in rows[:limit]]
        return entries, (entries[-1].id if len(rows) > limit else None)
