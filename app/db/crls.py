"""Queries on the `crls` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, update
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


# The statements of a publication, which runs under the CA's lock, are built once (as in
# app.db.certificates): building one cost more than running it.
_FULL_CRLS = (
    select(
        CRLRecord.id,
        CRLRecord.number,
        CRLRecord.this_update,
        CRLRecord.next_update,
        CRLRecord.parts,
    )
    .where(CRLRecord.ca_id == bindparam("ca_id"), CRLRecord.is_delta.is_(False))
    .order_by(CRLRecord.number)
)


def full_crls(session: Session, ca_id: str) -> list[FullCRLRow]:
    """The CA's full CRLs, oldest first, without their DER (one query): the latest is the
    one a publication starts from, the older ones are kept as possible delta bases."""
    rows = session.connection().execute(_FULL_CRLS, {"ca_id": ca_id})
    return [FullCRLRow(int(i), int(n), t, u, part_ids(parts)) for i, n, t, u, parts in rows]


_DELETE_SUPERSEDED = delete(CRLRecord).where(
    CRLRecord.ca_id == bindparam("ca_id"),
    CRLRecord.number < bindparam("number"),
    or_(CRLRecord.is_delta.is_(True), CRLRecord.id.in_(bindparam("full_ids", expanding=True))),
)


def delete_superseded(session: Session, ca_id: str, number: int, full_ids: list[int]) -> None:
    """Delete the CA's delta CRLs older than `number` and the full CRLs `full_ids`."""
    bounds = {"ca_id": ca_id, "number": number, "full_ids": full_ids}
    session.connection().execute(_DELETE_SUPERSEDED, bounds)


_INSERT_CRLS = insert(cast(Table, CRLRecord.__table__))


def add_crls(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert CRL rows (dicts of CRLRecord's columns, all with the same keys), one statement."""
    session.connection().execute(_INSERT_CRLS, rows)


_CLEAR_SUPERSEDED_DER = (
    update(CRLRecord)
    .where(
        CRLRecord.ca_id == bindparam("of_ca"),  # not "ca_id": a column's name, in an UPDATE
        CRLRecord.is_delta.is_(False),
        CRLRecord.number < bindparam("below"),
        func.length(CRLRecord.der) > 0,
    )
    .values(der=b"", parts=None, entries_at=None, size=None)
)


def clear_superseded_der(session: Session, ca_id: str, number: int) -> None:
    """Empty the DER of full CRLs older than `number`: only the latest one is ever served,
    the older rows stay as delta bases (number and nextUpdate) only."""
    session.connection().execute(_CLEAR_SUPERSEDED_DER, {"of_ca": ca_id, "below": number})


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


_PART_DERS = select(CRLPartRecord.id, CRLPartRecord.der).where(
    CRLPartRecord.id.in_(bindparam("ids", expanding=True))
)


def part_ders(session: Session, ids: list[int]) -> dict[int, bytes]:
    """id -> DER of those of the parts `ids` that exist."""
    if not ids:
        return {}
    rows = session.connection().execute(_PART_DERS, {"ids": ids})
    return {int(i): bytes(der) for i, der in rows}


_ADD_PART = insert(CRLPartRecord).returning(CRLPartRecord.id)


def add_part(session: Session, ca_id: str, der: bytes) -> int:
    return int(session.connection().execute(_ADD_PART, {"ca_id": ca_id, "der": der}).scalar_one())


_DELETE_PARTS = delete(CRLPartRecord).where(CRLPartRecord.ca_id == bindparam("ca_id"))
_DELETE_PARTS_EXCEPT = _DELETE_PARTS.where(
    CRLPartRecord.id.not_in(bindparam("keep", expanding=True))
)


def delete_parts_except(session: Session, ca_id: str, keep: list[int]) -> None:
    """Delete the CA's parts that the full CRL being published does not use."""
    if keep:
        session.connection().execute(_DELETE_PARTS_EXCEPT, {"ca_id": ca_id, "keep": keep})
    else:
        session.connection().execute(_DELETE_PARTS, {"ca_id": ca_id})


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
