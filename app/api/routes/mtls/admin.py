"""The admin API: tokens, certificates, revocation, CAs and the audit log. Admin role only
(the router's dependency protects every route, even one that forgets to ask)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from cryptography import x509
from fastapi import APIRouter, Depends, Query

from app.api.deps import AdminDep, ServicesDep, require_admin
from app.api.media import pem
from app.api.schemas import (
    AuditChainHead,
    AuditChainPage,
    AuditEntryResponse,
    AuditPage,
    CAResponse,
    CertificateDetails,
    CertificatePage,
    RevokeRequest,
    TokenCreateRequest,
    TokenCreateResponse,
)
from app.ca.serials import format_serial
from app.services.audit import AuditEntry
from app.services.certificates import CertificateInfo
from app.services.container import Services

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def details(info: CertificateInfo, services: Services, *, with_pem: bool) -> CertificateDetails:
    return CertificateDetails(
        serial=info.serial,
        ca_id=info.ca_id,
        profile=info.profile,
        common_name=info.common_name,
        names=info.names,
        status=info.status(services.clock.now()),
        not_before=info.not_before,
        not_after=info.not_after,
        created_at=info.created_at,
        revoked_at=info.revoked_at,
        reason=info.revocation_reason,
        invalidity_date=info.invalidity_date,
        pem=pem(x509.load_der_x509_certificate(info.der)) if with_pem else None,
    )


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreateRequest, admin: AdminDep, services: ServicesDep
) -> TokenCreateResponse:
    created = services.tokens.create(
        actor=admin.actor,
        profiles=body.profiles,
        names=body.names,
        ttl=timedelta(seconds=body.ttl_seconds),
        max_uses=body.max_uses,
        max_validity_days=body.max_validity_days,
    )
    return TokenCreateResponse(token=created.token, id=created.id, expires_at=created.expires_at)


@router.get("/certificates")
def list_certificates(
    services: ServicesDep,
    status: Literal["good", "revoked", "expired"] | None = None,
    q: Annotated[str | None, Query(max_length=256)] = None,
    profile: str | None = None,
    ca_id: str | None = None,
    expiring_within_days: Annotated[int | None, Query(ge=0, le=36500)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CertificatePage:
    items, next_cursor = services.certificates.search(
        status=status,
        q=q,
        profile=profile,
        ca_id=ca_id,
        expiring_within=(
            timedelta(days=expiring_within_days) if expiring_within_days is not None else None
        ),
        cursor=cursor,
        limit=limit,
    )
    return CertificatePage(
        items=[details(i, services, with_pem=False) for i in items], next_cursor=next_cursor
    )


@router.get("/certificates/{serial}")
def show_certificate(serial: str, services: ServicesDep) -> CertificateDetails:
    return details(services.certificates.get(serial), services, with_pem=True)


@router.post("/certificates/{serial}/revoke")
def revoke_certificate(
    serial: str, body: RevokeRequest, admin: AdminDep, services: ServicesDep
) -> CertificateDetails:
    info = services.revocation.revoke(
        serial, reason=body.reason, invalidity_date=body.invalidity_date, actor=admin.actor
    )
    return details(info, services, with_pem=False)


@router.post("/certificates/{serial}/unhold")
def unhold_certificate(serial: str, admin: AdminDep, services: ServicesDep) -> CertificateDetails:
    return details(services.revocation.unhold(serial, actor=admin.actor), services, with_pem=False)


@router.get("/cas")
def list_cas(services: ServicesDep) -> list[CAResponse]:
    return [
        CAResponse(
            ca_id=a.ca_id,
            kind=a.kind,
            parent_id=a.parent_id,
            subject=a.certificate.subject.rfc4514_string(),
            serial=format_serial(a.certificate.serial_number),
            not_before=a.certificate.not_valid_before_utc,
            not_after=a.certificate.not_valid_after_utc,
            active=a.active,
            certificate_url=services.endpoints.ca_issuers(a.ca_id),
            crl_url=services.endpoints.crl(a.ca_id),
        )
        for a in services.keyring.all()
    ]


_CURSOR = r"^[0-9]{1,18}$"
AUDIT_PAGE_MAX = 1000


def _audit_entry(e: AuditEntry) -> AuditEntryResponse:
    return AuditEntryResponse(
        id=e.id,
        at=e.at,
        actor=e.actor,
        action=e.action,
        target=e.target,
        details=e.details,
        prev_hash=e.prev_hash,
        hash=e.hash,
    )


@router.get("/audit")
def audit_log(
    services: ServicesDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=1024, description="substring")] = None,
    target: Annotated[str | None, Query(max_length=1024)] = None,
    since: Annotated[datetime | None, Query(description="inclusive; no zone means UTC")] = None,
    until: Annotated[datetime | None, Query(description="exclusive; no zone means UTC")] = None,
    cursor: Annotated[str | None, Query(pattern=_CURSOR)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, deprecated=True)] = None,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = 100,
) -> AuditPage:
    """Entries newest first; `next_cursor` pages to older ones (`before_id` is its old name)."""
    entries, next_id = services.audit.search(
        action=action,
        actor=actor,
        target=target,
        since=since,
        until=until,
        before_id=int(cursor) if cursor is not None else before_id,
        limit=limit,
    )
    return AuditPage(
        items=[_audit_entry(e) for e in entries],
        next_cursor=str(next_id) if next_id is not None else None,
    )


@router.get("/audit/chain")
def audit_chain(
    services: ServicesDep,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    up_to_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = AUDIT_PAGE_MAX,
) -> AuditChainPage:
    """The chain oldest first with its hashes, for `mintca audit verify`, which recomputes
    every hash itself. `up_to_id` (the head of the first page) keeps a walk to one chain
    while entries are appended."""
    head = services.audit.head()
    entries, next_id = services.audit.chain(
        after_id=after_id, up_to_id=head.id if up_to_id is None else up_to_id, limit=limit
    )
    return AuditChainPage(
        head=AuditChainHead(id=head.id, hash=head.hash),
        items=[_audit_entry(e) for e in entries],
        next_cursor=str(next_id) if next_id is not None else None,
    )
