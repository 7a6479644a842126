"""The audit trail: one row for every issuance and every admin action, in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.db import audit as audit_queries
from app.db.engine import Database
from app.db.models import AuditRecord


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to the caller's transaction, so it commits or fails with the action."""
    session.add(
        AuditRecord(at=at, actor=actor, action=action, target=target, details=details or {})
    )


class AuditService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def newest(self, *, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        with self._db.read() as session:
            return [
                AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.details)
                for r in audit_queries.newest(session, limit=limit, before_id=before_id)
            ]
