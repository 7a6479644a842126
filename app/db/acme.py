"""Queries on the ACME tables: nonces spent atomically, the single binding of an EAB
credential, and the claim that lets one validator at a time work on a challenge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import (
    AcmeAccountRecord,
    AcmeAuthorizationRecord,
    AcmeChallengeRecord,
    AcmeEabRecord,
    AcmeNonceRecord,
    AcmeOrderRecord,
)


def take_nonce(session: Session, value: str, now: datetime) -> bool:
    """Spend a nonce in one DELETE … RETURNING: of two requests with the same nonce, in any
    processes, exactly one gets it. True when this call spent it."""
    result = session.execute(
        delete(AcmeNonceRecord)
        .where(AcmeNonceRecord.value == value, AcmeNonceRecord.expires_at > now)
        .returning(AcmeNonceRecord.value)
    )
    return result.first() is not None


def purge_nonces(session: Session, now: datetime) -> None:
    session.execute(delete(AcmeNonceRecord).where(AcmeNonceRecord.expires_at <= now))


def bind_credential(session: Session, kid: str, account_id: str) -> bool:
    """Bind an unbound EAB credential to an account (one credential binds one account)."""
    result = session.execute(
        update(AcmeEabRecord)
        .where(AcmeEabRecord.kid == kid, AcmeEabRecord.account_id.is_(None))
        .values(account_id=account_id)
        .returning(AcmeEabRecord.kid)
    )
    return result.first() is not None


def find_account_by_thumbprint(session: Session, thumbprint: str) -> AcmeAccountRecord | None:
    return session.scalars(
        select(AcmeAccountRecord).where(AcmeAccountRecord.thumbprint == thumbprint)
    ).one_or_none()


def authorizations_of(session: Session, order_id: str) -> Sequence[AcmeAuthorizationRecord]:
    return session.scalars(
        select(AcmeAuthorizationRecord)
        .where(AcmeAuthorizationRecord.order_id == order_id)
        .order_by(AcmeAuthorizationRecord.identifier_value)
    ).all()


def challenges_of(session: Session, authorization_id: str) -> Sequence[AcmeChallengeRecord]:
    return session.scalars(
        select(AcmeChallengeRecord)
        .where(AcmeChallengeRecord.authorization_id == authorization_id)
        .order_by(AcmeChallengeRecord.type)
    ).all()


def find_order_by_serial(session: Session, serial: str) -> AcmeOrderRecord | None:
    return session.scalars(
        select(AcmeOrderRecord).where(AcmeOrderRecord.certificate_serial == serial)
    ).first()


def due_challenges(session: Session, now: datetime, *, limit: int) -> Sequence[str]:
    """Ids of challenges waiting for validation whose claim (if any) has lapsed."""
    return session.scalars(
        select(AcmeChallengeRecord.id)
        .where(
            AcmeChallengeRecord.status == "processing",
            or_(
                AcmeChallengeRecord.claimed_until.is_(None),
                AcmeChallengeRecord.claimed_until < now,
            ),
        )
        .limit(limit)
    ).all()


def claim_challenge(session: Session, challenge_id: str, now: datetime, until: datetime) -> bool:
    """Claim a processing challenge until `until`, unless another validator holds it."""
    result = session.execute(
        update(AcmeChallengeRecord)
        .where(
            AcmeChallengeRecord.id == challenge_id,
            AcmeChallengeRecord.status == "processing",
            or_(
                AcmeChallengeRecord.claimed_until.is_(None),
                AcmeChallengeRecord.claimed_until < now,
            ),
        )
        .values(claimed_until=until)
        .returning(AcmeChallengeRecord.id)
    )
    return result.first() is not None


def order_page_of(
    session: Session, account_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> Sequence[tuple[str, datetime]]:
    """(id, created_at) of the account's orders, newest first, strictly after the keyset
    position `after` (the last (created_at, id) of the previous page). An order created
    meanwhile sorts before every page already read, so a walk neither repeats nor skips one;
    ix_acme_orders_account_created serves it."""
    query = select(AcmeOrderRecord.id, AcmeOrderRecord.created_at).where(
        AcmeOrderRecord.account_id == account_id
    )
    if after is not None:
        created_at, order_id = after
        query = query.where(
            or_(
                AcmeOrderRecord.created_at < created_at,
                and_(AcmeOrderRecord.created_at == created_at, AcmeOrderRecord.id < order_id),
            )
        )
    query = query.order_by(AcmeOrderRecord.created_at.desc(), AcmeOrderRecord.id.desc())
    return [(row.id, row.created_at) for row in session.execute(query.limit(limit))]


def lock_all_credentials(session: Session) -> list[AcmeEabRecord]:
    """Every EAB credential row, locked for the rest of the transaction (KEK rotation)."""
    query = select(AcmeEabRecord).order_by(AcmeEabRecord.kid).with_for_update()
    return list(session.scalars(query.execution_options(populate_existing=True)))
