"""Queries on the `crls` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import CRLPartRecord, CRLRecord


def latest(session: Session, ca_id: str, *, delta: bool) -> CRLRecord | None:
    return session.scalars(
        select(CRLRecord)
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta == delta)
        .order_by(CRLRecord.number.desc())
        .limit(1)
    ).one_or_none()


class FullCRLRow(NamedTuple):
    """A full CRL's row without its DER."""

    id: int
    number: int
    this_update: datetime
    next_update: datetime
    part_ids: list[int] | None  # None: stored whole (or superseded, its DER cleared)


def full_crls(session: Session, ca_id: str) -> list[FullCRLRow]:
    """The CA's full CRLs, oldest first, without their DER (one query): the latest is the
    one a publication starts from, the older ones are kept as possible delta bases."""
    rows = session.execute(
        select(
            CRLRecord.id,
            CRLRecord.number,
            CRLRecord.this_update,
            CRLRecord.next_update,
            CRLRecord.parts,
        )
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta.is_(False))
        .order_by(CRLRecord.number)
    )
    return [FullCRLRow(int(i), int(n), t, u, part_ids(parts)) for i, n, t, u, parts in rows]


def delete_superseded(session: Session, ca_id: str, number: int, full_ids: list[int]) -> None:
    """Delete the CA's delta CRLs older than `number` and the full CRLs `full_ids`."""
    kind = or_(CRLRecord.is_delta.is_(True), CRLRecord.id.in_(full_ids))
    query = delete(CRLRecord).where(CRLRecord.ca_id == ca_id, CRLRecord.number < number, kind)
    session.execute(query)


_INSERT_CRLS = insert(cast(Table, CRLRecord.__table__))


def add_crls(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert CRL rows (dicts of CRLRecord's columns, all with the same keys), one statement."""
    session.connection().execute(_INSERT_CRLS, rows)


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
        .values(der=b"", parts=None, entries_at=None, size=None)
    )


def latest_next_update(session: Session, ca_id: str) -> datetime | None:
    """nextUpdate of the latest full CRL, without loading its DER."""
    return session.scalar(
        select(CRLRecord.next_update)
        .where(CRLRecord.ca_id == ca_id, CRLRecord.is_delta.is_(False))
        .order_by(CRLRecord.number.desc())
        .limit(1)
    )


# --- a full CRL stored in parts (crl_parts) -------------------------------------------------


def part_ids(parts: str | None) -> list[int] | None:
    return None if parts is None else [int(i) for i in parts.split(",") if i]


def part_ders(session: Session, ids: list[int]) -> dict[int, bytes]:
    """id -> DER of those of the parts `ids` that exist."""
    if not ids:
        return {}
    rows = session.execute(
        select(CRLPartRecord.id, CRLPartRecord.der).where(CRLPartRecord.id.in_(ids))
    )
    return {int(i): bytes(der) for i, der in rows}


def add_part(session: Session, ca_id: str, der: bytes) -> int:
    query = insert(CRLPartRecord).values(ca_id=ca_id, der=der).returning(CRLPartRecord.id)
    return int(session.execute(query).scalar_one())


def delete_parts_except(session: Session, ca_id: str, keep: list[int]) -> None:
    """Delete the CA's parts that the full CRL being published does not use."""
    query = delete(CRLPartRecord).where(CRLPartRecord.ca_id == ca_id)
    if keep:
        query = query.where(CRLPartRecord.id.not_in(keep))
    session.execute(query)


def whole_der(session: Session, row: CRLRecord) -> list[bytes] | None:
    """The CRL of `row` as pieces to join: its DER alone, or with its parts put in. None when
    a part is gone: a later publication replaced it after `row` was read (under PostgreSQL's
    READ COMMITTED each statement sees the latest commit), so read the row again."""
    ids = part_ids(row.parts)
    if ids is None or row.entries_at is None:
        return [row.der]
    ders = part_ders(session, ids)
    if len(ders) != len(set(ids)):
        return None
    at = row.entries_at
    return [row.der[:at], *(ders[i] for i in ids), row.der[at:]]
