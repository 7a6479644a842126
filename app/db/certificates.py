"""Queries on the `certificates` table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import CertificateRecord
from app.db.status_events import mark_status_changed


def find_certificate(session: Session, serial: str) -> CertificateRecord | None:
    return session.get(CertificateRecord, serial)


# The statements a batch of status changes runs under its CA's lock are built once: building
# a SQLAlchemy statement costs more than running it, and on PostgreSQL that time is spent while
# the other workers wait for the lock.
_CA_IDS_OF = select(CertificateRecord.serial, CertificateRecord.ca_id).where(
    CertificateRecord.serial.in_(bindparam("serials", expanding=True))
)


def ca_ids_of(session: Session, serials: Sequence[str]) -> dict[str, str]:
    """serial -> CA id of each of these serials MintCA issued (one query)."""
    rows = session.connection().execute(_CA_IDS_OF, {"serials": list(serials)})
    return {serial: ca_id for serial, ca_id in rows}


def lock_certificates(session: Session, serials: Sequence[str]) -> dict[str, CertificateRecord]:
    """Lock these rows (one query) and read them afresh, as `lock_certificate` does."""
    query = (
        select(CertificateRecord)
        .where(CertificateRecord.serial.in_(serials))
        .order_by(CertificateRecord.serial)
        .with_for_update()
    )
    records = session.scalars(query.execution_options(populate_existing=True))
    return {record.serial: record for record in records}


@dataclass
class StatusRow:
    """A certificate's columns as a status change reads and sets them: plain values, no ORM
    object (a batch of revocations reads and writes these with one statement each)."""

    serial: str
    ca_id: str
    profile: str
    common_name: str | None
    names: list[str]
    not_before: datetime
    not_after: datetime
    created_at: datetime
    der: bytes
    revoked_at: datetime | None
    revocation_reason: str | None
    invalidity_date: datetime | None
    crl_entry: bytes | None
    status_crl_number: int | None


_STATUS_ROW_COLUMNS = [getattr(CertificateRecord, f.name) for f in fields(StatusRow)]
# What a status change writes back (the rest of StatusRow is read only).
STATUS_COLUMNS = (
    "revoked_at",
    "revocation_reason",
    "invalidity_date",
    "crl_entry",
    "status_crl_number",
)


_LOCK_STATUS_ROWS = (
    select(*_STATUS_ROW_COLUMNS)
    .where(CertificateRecord.serial.in_(bindparam("serials", expanding=True)))
    .order_by(CertificateRecord.serial)
    .with_for_update()
)


def lock_status_rows(session: Session, serials: Sequence[str]) -> dict[str, StatusRow]:
    """Lock these certificates' rows (one query, in serial order) and read them as StatusRows;
    write changes back with `set_statuses`."""
    rows = session.connection().execute(_LOCK_STATUS_ROWS, {"serials": list(serials)})
    return {row[0]: StatusRow(*row) for row in rows}


def lock_certificate(session: Session, serial: str) -> CertificateRecord | None:
    """Lock the row and read it afresh, even if this session loaded it before the lock."""
    query = select(CertificateRecord).where(CertificateRecord.serial == serial).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


# What OCSP needs of a certificate: when it was revoked and why (both None while good).
RevocationState = tuple[datetime | None, str | None]


def revocation_states(
    session: Session, ca_id: str, serials: Sequence[str]
) -> dict[str, RevocationState]:
    """The revocation state of each of these serials that the CA issued: three columns of an
    indexed lookup, not whole rows (OCSP asks this on every request)."""
    rows = session.connection().execute(
        _REVOCATION_STATES, {"ca_id": ca_id, "serials": list(serials)}
    )
    return {serial: (revoked_at, reason) for serial, revoked_at, reason in rows}


_REVOCATION_STATES = select(
    CertificateRecord.serial, CertificateRecord.revoked_at, CertificateRecord.revocation_reason
).where(
    CertificateRecord.ca_id == bindparam("ca_id"),
    CertificateRecord.serial.in_(bindparam("serials", expanding=True)),
)


def revoked_on(session: Session, ca_id: str, at: datetime) -> list[CertificateRecord]:
    """Revoked certificates of a CA that have not expired by `at`: the full CRL's entries."""
    return list(
        session.scalars(
            select(CertificateRecord)
            .where(
                CertificateRecord.ca_id == ca_id,
                CertificateRecord.revoked_at.is_not(None),
                CertificateRecord.not_after > at,
            )
            .order_by(CertificateRecord.serial)
        )
    )


def changed_since(session: Session, ca_id: str, crl_number: int) -> list[CertificateRecord]:
    """Certificates whose status changed after the full CRL `crl_number`: a delta's entries."""
    return list(
        session.scalars(
            select(CertificateRecord)
            .where(
                CertificateRecord.ca_id == ca_id,
                CertificateRecord.status_crl_number > crl_number,
            )
            .order_by(CertificateRecord.serial)
        )
    )


# A status change since some CRL number: serial, the full CRL entry (None unless revoked),
# notAfter (an expired certificate leaves the full CRL), the CRL number that first shows it.
ChangeRow = tuple[str, bytes | None, datetime, int]
STREAM_ROWS = 50_000


_CRL_ENTRIES_SQL = (
    "SELECT serial, crl_entry FROM certificates"
    " WHERE ca_id = {mark} AND crl_entry IS NOT NULL AND not_after > {mark}"
)
_CRL_ENTRY_DERS_SQL = (
    "SELECT crl_entry FROM certificates"
    " WHERE ca_id = {mark} AND crl_entry IS NOT NULL AND not_after > {mark}"
)


def stream_crl_entries(session: Session, ca_id: str, at: datetime) -> Iterator[tuple[str, bytes]]:
    """(serial, entry DER) of every certificate on the full CRL (revoked, not expired by
    `at`), from the partial index ix_certificates_crl_entries alone.

    A million rows through SQLAlchemy's result objects cost 1.5-4 µs each, more than the rest
    of the CRL, so this one query runs on the DBAPI cursor of the session's transaction
    (server-side in batches on PostgreSQL)."""
    for rows in _crl_entry_batches(session, _CRL_ENTRIES_SQL, ca_id, at):
        yield from rows


def crl_entry_batches(session: Session, ca_id: str, at: datetime) -> Iterator[list[bytes]]:
    """The entry DER of the same certificates as `stream_crl_entries`, in batches, without
    the serials (each entry holds its own; decoding a million serials costs ~0.1 s)."""
    for rows in _crl_entry_batches(session, _CRL_ENTRY_DERS_SQL, ca_id, at):
        yield [entry for (entry,) in rows]


def _crl_entry_batches(
    session: Session, sql: str, ca_id: str, at: datetime
) -> Iterator[Sequence[Any]]:
    dialect = session.get_bind().dialect
    bind = CertificateRecord.__table__.c.not_after.type.bind_processor(dialect)
    cutoff = bind(at) if bind is not None else at
    connection = session.connection().connection
    if dialect.name == "postgresql":
        cursor = connection.cursor(name="mintca_crl_entries")  # psycopg: a server-side cursor
        cursor.execute(sql.format(mark="%s"), (ca_id, cutoff))
    else:
        cursor = connection.cursor()
        cursor.execute(sql.format(mark="?"), (ca_id, cutoff))
    try:
        while rows := cursor.fetchmany(STREAM_ROWS):
            yield rows
    finally:
        cursor.close()


def status_changes_since(session: Session, ca_id: str, crl_number: int) -> list[ChangeRow]:
    """Certificates whose status changed after the CRL `crl_number` (indexed by
    (ca_id, status_crl_number)), as plain tuples."""
    rows = session.connection().execute(
        _STATUS_CHANGES_SINCE, {"ca_id": ca_id, "crl_number": crl_number}
    )
    return [(serial, entry, not_after, int(n or 0)) for serial, entry, not_after, n in rows]


_STATUS_CHANGES_SINCE = (
    select(
        CertificateRecord.serial,
        CertificateRecord.crl_entry,
        CertificateRecord.not_after,
        CertificateRecord.status_crl_number,
    )
    .where(
        CertificateRecord.ca_id == bindparam("ca_id"),
        CertificateRecord.status_crl_number > bindparam("crl_number"),
    )
    .order_by(CertificateRecord.serial)
)


def revoked_expiring_between(
    session: Session, ca_id: str, after: datetime, until: datetime
) -> list[str]:
    """Serials of revoked certificates with after < notAfter <= until: the entries a full CRL
    drops when its cut-off moves from `after` to `until`."""
    bounds = {"ca_id": ca_id, "after": after, "until": until}
    return list(session.connection().scalars(_REVOKED_EXPIRING_BETWEEN, bounds))


_REVOKED_EXPIRING_BETWEEN = select(CertificateRecord.serial).where(
    CertificateRecord.ca_id == bindparam("ca_id"),
    CertificateRecord.crl_entry.is_not(None),
    CertificateRecord.not_after > bindparam("after"),
    CertificateRecord.not_after <= bindparam("until"),
)


def search(
    session: Session,
    *,
    now: datetime,
    status: str | None,
    q: str | None,
    profile: str | None,
    ca_id: str | None,
    expiring_before: datetime | None,
    after_serial: str | None,
    limit: int,
) -> list[CertificateRecord]:
    """Admin listing, ordered by serial for stable keyset pagination."""
    query: Select[tuple[CertificateRecord]] = select(CertificateRecord)
    if status == "revoked":
        query = query.where(CertificateRecord.revoked_at.is_not(None))
    elif status == "expired":
        query = query.where(
            CertificateRecord.revoked_at.is_(None), CertificateRecord.not_after < now
        )
    elif status == "good":
        query = query.where(
            CertificateRecord.revoked_at.is_(None), CertificateRecord.not_after >= now
        )
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(
            or_(
                CertificateRecord.common_name.ilike(pattern),
                CertificateRecord.names_text.ilike(pattern),
            )
        )
    if profile:
        query = query.where(CertificateRecord.profile == profile)
    if ca_id:
        query = query.where(CertificateRecord.ca_id == ca_id)
    if expiring_before is not None:
        query = query.where(
            CertificateRecord.not_after <= expiring_before, CertificateRecord.not_after >= now
        )
    if after_serial is not None:
        query = query.where(CertificateRecord.serial > after_serial)
    return list(session.scalars(query.order_by(CertificateRecord.serial).limit(limit)))


@dataclass(frozen=True)
class RevocationFilter:
    """Which certificates a bulk revocation takes: every given field must match."""

    ca_id: str | None = None
    profile: str | None = None
    q: str | None = None  # name substring, as in the admin listing
    token_id: str | None = None
    issued_before: datetime | None = None
    issued_after: datetime | None = None

    def is_empty(self) -> bool:
        return all(value in (None, "") for value in vars(self).values())

    def describe(self) -> dict[str, str]:
        """The given fields as JSON-ready text (for the audit row)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else str(value)
            for name, value in vars(self).items()
            if value not in (None, "")
        }


def _revocable(
    criteria: RevocationFilter, *, now: datetime, final: bool
) -> list[ColumnElement[bool]]:
    """Conditions of a bulk revocation: the filter, not expired, and not revoked yet (or on
    hold, when the reason is final: a hold may move to a final reason)."""
    state: ColumnElement[bool] = CertificateRecord.revoked_at.is_(None)
    if final:
        state = or_(state, CertificateRecord.revocation_reason == "certificateHold")
    conditions = [state, CertificateRecord.not_after > now]
    if criteria.ca_id is not None:
        conditions.append(CertificateRecord.ca_id == criteria.ca_id)
    if criteria.profile is not None:
        conditions.append(CertificateRecord.profile == criteria.profile)
    if criteria.q:
        pattern = f"%{criteria.q.lower()}%"
        conditions.append(
            or_(
                CertificateRecord.common_name.ilike(pattern),
                CertificateRecord.names_text.ilike(pattern),
            )
        )
    if criteria.token_id is not None:
        conditions.append(CertificateRecord.token_id == criteria.token_id)
    if criteria.issued_before is not None:
        conditions.append(CertificateRecord.created_at < criteria.issued_before)
    if criteria.issued_after is not None:
        conditions.append(CertificateRecord.created_at > criteria.issued_after)
    return conditions


# A certificate a bulk revocation changes: serial, CA id, revoked_at (a hold's date or None).
RevocableRow = tuple[str, str, datetime | None]


def count_revocable(
    session: Session, criteria: RevocationFilter, *, now: datetime, final: bool, first: int
) -> tuple[int, list[str]]:
    """How many certificates a bulk revocation would change, and the first serials."""
    conditions = _revocable(criteria, now=now, final=final)
    count = session.scalar(select(func.count()).select_from(CertificateRecord).where(*conditions))
    serials = session.scalars(
        select(CertificateRecord.serial)
        .where(*conditions)
        .order_by(CertificateRecord.serial)
        .limit(first)
    )
    return int(count or 0), list(serials)


def lock_revocable(
    session: Session, criteria: RevocationFilter, *, now: datetime, final: bool
) -> list[RevocableRow]:
    """The certificates a bulk revocation changes, locked (FOR UPDATE on PostgreSQL)."""
    rows = session.execute(
        select(CertificateRecord.serial, CertificateRecord.ca_id, CertificateRecord.revoked_at)
        .where(*_revocable(criteria, now=now, final=final))
        .order_by(CertificateRecord.serial)
        .with_for_update()
    )
    return [(serial, ca_id, revoked_at) for serial, ca_id, revoked_at in rows]


_CERTIFICATES = cast(Table, CertificateRecord.__table__)
_SET_STATUSES = (
    update(_CERTIFICATES)
    .where(_CERTIFICATES.c.serial == bindparam("at_serial"))
    .values({name: bindparam(f"new_{name}") for name in STATUS_COLUMNS})
)


def set_statuses(session: Session, changes: list[dict[str, Any]]) -> None:
    """Many status changes in one executemany UPDATE by primary key (each dict carries
    `serial` and every one of STATUS_COLUMNS). A Core statement, so it marks the transaction
    itself: the OCSP caches of every process drop their answers once it commits."""
    if changes:
        mark_status_changed(session)
        session.connection().execute(
            _SET_STATUSES,
            [
                {"at_serial": change["serial"], **{f"new_{n}": change[n] for n in STATUS_COLUMNS}}
                for change in changes
            ],
        )


_INSERT_CERTIFICATES = insert(_CERTIFICATES)


def insert_certificates(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert issued certificates' rows (dicts of CertificateRecord's columns, all with the
    same keys) in one executemany: no ORM object per row."""
    session.connection().execute(_INSERT_CERTIFICATES, list(rows))
