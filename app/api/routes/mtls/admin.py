"""The admin API: tokens, certificates, revocation, CAs and the audit log. Each route declares
its role (AuditorDep, OperatorDep, AdminDep or `dependencies=[Depends(require_...)]`); the
router's dependency demands admin of a route that declares none."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from cryptography import x509
from fastapi import APIRouter, Depends, Query

from app.api.deps import (
    AdminDep,
    OperatorDep,
    ServicesDep,
    require_auditor,
    require_declared_role,
)
from app.api.media import pem
from app.api.schemas import (
    AuditChainHead,
    AuditChainPage,
    AuditEntryResponse,
    AuditPage,
    BulkRevocationRequest,
    BulkRevocationResponse,
    CAResponse,
    CARotateRequest,
    CertificateDetails,
    CertificatePage,
    RevokeRequest,
    TokenCreateRequest,
    TokenCreateResponse,
    UTCTime,
)
from app.ca.serials import format_serial
from app.errors import InvalidRequestError
from app.services.audit import AuditEntry
from app.services.bulk_revocation import RevocationFilter
from app.services.certificates import CertificateInfo
from app.services.container import Services
from app.services.keyring import Authority
from app.services.peers import check_may_grant

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_declared_role)])


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
    body: TokenCreateRequest, admin: OperatorDep, services: ServicesDep
) -> TokenCreateResponse:
    check_may_grant(admin, body.profiles)
    created = services.tokens.create(
        actor=admin.actor,
        profiles=body.profiles,
        names=body.names,
        ttl=timedelta(seconds=body.ttl_seconds),
        max_uses=body.max_uses,
        max_validity_days=body.max_validity_days,
    )
    return TokenCreateResponse(token=created.token, id=created.id, expires_at=created.expires_at)


@router.get("/certificates", dependencies=[Depends(require_auditor)])
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


@router.get("/certificates/{serial}", dependencies=[Depends(require_auditor)])
def show_certificate(serial: str, services: ServicesDep) -> CertificateDetails:
    return details(services.certificates.get(serial), services, with_pem=True)


@router.post("/certificates/{serial}/revoke")
def revoke_certificate(
    serial: str, body: RevokeRequest, admin: OperatorDep, services: ServicesDep
) -> CertificateDetails:
    info = services.revocation.revoke(
        serial, reason=body.reason, invalidity_date=body.invalidity_date, actor=admin.actor
    )
    return details(info, services, with_pem=False)


@router.post("/certificates/{serial}/unhold")
def unhold_certificate(
    serial: str, admin: OperatorDep, services: ServicesDep
) -> CertificateDetails:
    return details(services.revocation.unhold(serial, actor=admin.actor), services, with_pem=False)


def ca_response(authority: Authority, services: Services) -> CAResponse:
    certificate = authority.certificate
    return CAResponse(
        ca_id=authority.ca_id,
        kind=authority.kind,
        parent_id=authority.parent_id,
        subject=certificate.subject.rfc4514_string(),
        serial=format_serial(certificate.serial_number),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        active=authority.active,
        certificate_url=services.endpoints.ca_issuers(authority.ca_id),
        crl_url=services.endpoints.crl(authority.ca_id),
        issuer_crl_url=services.endpoints.crl(authority.parent_id) if authority.parent_id else None,
    )


@router.get("/cas", dependencies=[Depends(require_auditor)])
def list_cas(services: ServicesDep) -> list[CAResponse]:
    return [ca_response(a, services) for a in services.authorities.list()]


@router.post("/cas/rotate", status_code=201)
def rotate_ca(body: CARotateRequest, admin: AdminDep, services: ServicesDep) -> CAResponse:
    """A new issuing CA under the root becomes the active one for every process at once;
    the previous one keeps its CRL and OCSP for what it issued."""
    authority = services.authorities.rotate(
        actor=admin.actor, key_type=body.key_type, validity=timedelta(days=body.validity_days)
    )
    return ca_response(authority, services)


# audit_log.id is INTEGER (32 bits on PostgreSQL): larger ids are refused as bad input (400)
# rather than reaching the database as an out-of-range parameter (500).
AUDIT_ID_MAX = 2**31 - 1
_CURSOR = r"^[0-9]{1,10}$"
AUDIT_PAGE_MAX = 1000


def _audit_cursor(cursor: str) -> int:
    """Raises:
    InvalidRequestError: beyond the ids audit_log can hold."""
    if int(cursor) > AUDIT_ID_MAX:
        raise InvalidRequestError("cursor is not one this API gave")
    return int(cursor)


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


@router.get("/audit", dependencies=[Depends(require_auditor)])
def audit_log(
    services: ServicesDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=1024, description="substring")] = None,
    target: Annotated[str | None, Query(max_length=1024)] = None,
    since: Annotated[UTCTime | None, Query(description="inclusive; no zone means UTC")] = None,
    until: Annotated[UTCTime | None, Query(description="exclusive; no zone means UTC")] = None,
    cursor: Annotated[str | None, Query(pattern=_CURSOR)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=AUDIT_ID_MAX, deprecated=True)] = None,
    limit: Annotated[int, Query(ge=1, le=AUDIT_PAGE_MAX)] = 100,
) -> AuditPage:
    """Entries newest first; `next_cursor` pages to older ones (`before_id` is its old name)."""
    entries, next_id = services.audit.search(
        action=action,
        actor=actor,
        target=target,
        since=since,
        until=until,
        before_id=_audit_cursor(cursor) if cursor is not None else before_id,
        limit=limit,
    )
    return AuditPage(
        items=[_audit_entry(e) for e in entries],
        next_cursor=str(next_id) if next_id is not None else None,
    )


@router.get("/audit/chain", dependencies=[Depends(require_auditor)])
def audit_chain(
    services: ServicesDep,
    after_id: Annotated[int, Query(ge=0, le=AUDIT_ID_MAX)] = 0,
    up_to_id: Annotated[int | None, Query(ge=0, le=AUDIT_ID_MAX)] = None,
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


@router.post("/revocations")
def bulk_revocation(
    body: BulkRevocationRequest, admin: OperatorDep, services: ServicesDep
) -> BulkRevocationResponse:
    """Revoke every certificate the filter matches (dry_run: only count them)."""
    criteria = RevocationFilter(**body.filter.model_dump())
    done = services.revocation.revoke_matching(
        criteria, reason=body.reason, dry_run=body.dry_run, actor=admin.actor
    )
    return BulkRevocationResponse(
        count=done.count, serials=done.serials, dry_run=body.dry_run, crl_numbers=done.crl_numbers
    )
