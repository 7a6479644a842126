"""Bulk revocation: every certificate a filter matches, revoked in one transaction with one
CRL publication per CA it touches (the CRL number grows by one, as for a single revocation),
and one audit row for the whole action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.cas import list_cas
from app.db.certificates import RevocationFilter
from app.db.engine import Database
from app.errors import InvalidRequestError
from app.services.audit import record
from app.services.crl_entries import encode_entry
from app.services.crls import CRLService
from app.services.status_batches import StatusBatches

__all__ = ["BulkRevocation", "RevocationFilter", "check_filter", "preview", "revoke_matching"]

HOLD = "certificateHold"
FIRST_SERIALS = 100  # how many serials an answer lists


@dataclass(frozen=True)
class BulkRevocation:
    count: int
    serials: list[str]  # the first FIRST_SERIALS, by serial
    crl_numbers: dict[str, int]  # CA id -> the CRL that shows them (empty for a dry run)


def check_filter(criteria: RevocationFilter) -> None:
    """Raises:
    InvalidRequestError: an empty filter (it would match every certificate MintCA issued;
        an operator who means that names the CA with `ca_id`)."""
    if criteria.is_empty():
        raise InvalidRequestError(
            "the filter is empty; give at least one of ca_id, profile, q, token_id, "
            "issued_before, issued_after"
        )


def preview(
    db: Database, clock: Clock, criteria: RevocationFilter, *, reason: str
) -> BulkRevocation:
    """A dry run: what `revoke_matching` would revoke now, changing nothing."""
    with db.read() as session:
        count, serials = certificate_queries.count_revocable(
            session, criteria, now=clock.now(), final=reason != HOLD, first=FIRST_SERIALS
        )
    return BulkRevocation(count, serials, {})


def revoke_matching(
    db: Database,
    clock: Clock,
    crls: CRLService,
    batches: StatusBatches,
    criteria: RevocationFilter,
    *,
    reason: str,
    actor: str,
) -> BulkRevocation:
    """Revoke every match (a hold moves to a final reason and keeps its date), publish each
    touched CA's CRLs once and write one audit row, all in one transaction; then tell the
    status listeners."""
    with db.write() as session:
        # Every CA row, in id order as every writer takes them: the matches' CAs are known
        # only once their rows are locked, and locking a row publishes nothing.
        numbers = {
            ca.id: crls.reserve_number(session, ca.id)
            for ca in sorted(list_cas(session), key=lambda ca: ca.id)
        }
        now = clock.now()  # under the locks, as for single revocations
        rows = certificate_queries.lock_revocable(session, criteria, now=now, final=reason != HOLD)
        changes: list[dict[str, Any]] = []
        for serial, ca_id, held_since in rows:
            revoked_at = held_since or now
            changes.append(
                {
                    "serial": serial,
                    "revoked_at": revoked_at,
                    "revocation_reason": reason,
                    "invalidity_date": None,
                    "crl_entry": encode_entry(serial, revoked_at, reason, None),
                    "status_crl_number": numbers[ca_id],
                }
            )
        certificate_queries.set_statuses(session, changes)
        touched = sorted({ca_id for _, ca_id, _ in rows})
        published = {ca_id: crls.publish(session, ca_id, now=now).number for ca_id in touched}
        serials = [serial for serial, _, _ in rows[:FIRST_SERIALS]]
        record(
            session,
            at=now,
            actor=actor,
            action="certificate.bulk_revoke",
            target=f"{len(rows)} certificates",
            details={
                "filter": criteria.describe(),
                "reason": reason,
                "count": len(rows),
                "crl_numbers": published,
                "first_serials": serials,
            },
        )
    changed: dict[str, list[str]] = {}
    for serial, ca_id, _ in rows:
        changed.setdefault(ca_id, []).append(serial)
    batches.notify(changed)
    return BulkRevocation(len(rows), serials, published)
