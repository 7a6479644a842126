"""Queries on the `cas` table, including the row lock that orders CRL numbers."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from app.db.models import CARecord


def list_cas(session: Session) -> list[CARecord]:
    return list(session.scalars(select(CARecord).order_by(CARecord.created_at, CARecord.id)))


def wrapped_ca_keys(session: Session) -> list[tuple[str, bytes | None]]:
    """Each CA's id and wrapped key (two columns every schema revision has; None for an
    offline root or a key in a PKCS#11 token)."""
    return [
        (r.id, r.key_wrapped) for r in session.execute(select(CARecord.id, CARecord.key_wrapped))
    ]


def find_ca(session: Session, ca_id: str) -> CARecord | None:
    return session.get(CARecord, ca_id)


def lock_ca(session: Session, ca_id: str) -> CARecord:
    """Lock the CA row for the rest of the transaction (FOR UPDATE on PostgreSQL; on SQLite
    the write transaction began IMMEDIATE and already holds the database's write lock)."""
    # populate_existing: a row this session loaded before the lock is read again under it.
    query = select(CARecord).where(CARecord.id == ca_id).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


_CAS = cast(Table, CARecord.__table__)


def locked_crl_number(session: Session, ca_id: str) -> int:
    """Lock the CA row (as `lock_ca`) and read only its latest CRL number: no ORM object."""
    query = select(_CAS.c.crl_number).where(_CAS.c.id == ca_id).with_for_update()
    return int(session.execute(query).scalar_one())


def next_crl_number(session: Session, ca_id: str) -> int:
    """Take the CA's next CRL number in one statement (an UPDATE, which locks the row on
    PostgreSQL as FOR UPDATE does). A CARecord this session loaded keeps the old number."""
    query = (
        update(_CAS)
        .where(_CAS.c.id == ca_id)
        .values(crl_number=_CAS.c.crl_number + 1)
        .returning(_CAS.c.crl_number)
    )
    return int(session.execute(query).scalar_one())


def lock_all_cas(session: Session) -> list[CARecord]:
    """Every CA row, locked (in id order, so two lockers never deadlock): a KEK rotation
    holds them while it re-wraps, and whoever wraps a new key under a CA's lock waits."""
    query = select(CARecord).order_by(CARecord.id).with_for_update()
    return list(session.scalars(query.execution_options(populate_existing=True)))


def any_ca_exists(session: Session) -> bool:
    return session.scalar(select(CARecord.id).limit(1)) is not None


def set_active_issuer(session: Session, ca_id: str) -> None:
    session.execute(update(CARecord).where(CARecord.kind == "issuing").values(active=False))
    session.execute(update(CARecord).where(CARecord.id == ca_id).values(active=True))


_ACTIVE_ISSUER = (
    select(CARecord.id).where(CARecord.kind == "issuing", CARecord.active.is_(True)).limit(1)
)


def active_issuer_id(session: Session) -> str | None:
    """The id of the issuing CA new certificates come from. The table holds a handful of
    rows, so this is cheap enough to ask on every enrollment: a rotation committed by any
    process is seen by the next request of every process."""
    # Built once, run as Core on the session's connection: every enrollment batch asks.
    return session.connection().scalar(_ACTIVE_ISSUER)


def ca_states(session: Session) -> list[tuple[str, bool]]:
    """(id, active) of every CA, oldest first: what a process compares to know whether it
    must reload its keyring."""
    rows = session.execute(
        select(CARecord.id, CARecord.active).order_by(CARecord.created_at, CARecord.id)
    )
    return [(ca_id, active) for ca_id, active in rows]


def count_issuing(session: Session) -> int:
    return session.scalar(select(func.count()).where(CARecord.kind == "issuing")) or 0
