"""Spending token uses inside a group commit: the token's row is read once under its lock,
uses are counted in memory as the batch's enrollments take them, and the row is written once
before the commit. Exactly as many enrollments win as the token had uses left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.db.tokens import lock_uses, spend_uses
from app.services.group_commit import before_commit

_LEDGER = "mintca.token_spends"


@dataclass
class _Uses:
    left: int
    expires_at: datetime | None
    spent: int = 0


def spend_use(session: Session, token_id: str, now: datetime) -> bool:
    """Take one use of the token in this transaction; False when it is unknown, expired at
    `now` or used up (nothing is written then)."""
    ledger: dict[str, _Uses] = session.info.setdefault(_LEDGER, {})
    uses = ledger.get(token_id)
    if uses is None:
        row = lock_uses(session, token_id)
        uses = ledger[token_id] = _Uses(*row) if row is not None else _Uses(0, None)
    if uses.left <= 0 or uses.expires_at is None or uses.expires_at <= now:
        return False
    uses.left -= 1
    uses.spent += 1
    before_commit(session, _LEDGER, _write_spends)
    return True


def _write_spends(session: Session) -> None:
    for token_id, uses in session.info.pop(_LEDGER, {}).items():
        if uses.spent:
            spend_uses(session, token_id, uses.spent)
