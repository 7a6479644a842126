"""Role certificates: an admin issues an auditor, operator or admin certificate for a CSR made
on the holder's side (`mintca admin issue`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import AdminDep, ServicesDep, require_declared_role
from app.api.routes.public.certificates import issued_response
from app.api.schemas import IssuedResponse, RoleCertificateRequest

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_declared_role)])


@router.post("/role-certificates", status_code=201)
def issue_role_certificate(
    body: RoleCertificateRequest, admin: AdminDep, services: ServicesDep
) -> IssuedResponse:
    issued = services.roles.issue(
        csr_data=body.csr,
        role=body.role,
        validity_days=body.validity_days,
        actor=admin.actor,
    )
    return issued_response(issued)
