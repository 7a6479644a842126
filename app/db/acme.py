"""Queries on the ACME tables: nonces spent atomically, the single binding of an EAB
credential, and the claim that lets one validator at a time work on a challenge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
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


def order_ids_of(session: Session, account_id: str, *, limit: int) -> Sequence[str]:
    """The account's newest orders first."""
    return session.scalars(
        select(AcmeOrderRecord.id)
        .where(AcmeOrderRecord.account_id == account_id)
        .order_by(AcmeOrderRecord.created_at.desc(), AcmeOrderRecord.id)
        .limit(limit)
    ).all()


def lock_all_credentials(session: Session) -> list[AcmeEabRecord]:
    """Every EAB credential row, locked for the rest of the transaction (KEK rotation)."""
    query = select(AcmeEabRecord).order_by(AcmeEabRecord.kid).with_for_update()
    return list(session.scalars(query.execution_options(populate_existing=True)))
