"""`POST /admin/acme/eab` on the mtls listener: an admin makes an EAB credential."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminDep, ServicesDep
from app.api.schemas import AcmeEabCreateRequest, AcmeEabCreateResponse

router = APIRouter(prefix="/admin/acme", tags=["acme"])


@router.post("/eab", status_code=201)
def create_eab(
    body: AcmeEabCreateRequest, admin: AdminDep, services: ServicesDep
) -> AcmeEabCreateResponse:
    """The HMAC key is shown once; accounts bound to it may order only `names`."""
    credential = services.acme.accounts.create_credential(
        names=body.names,
        profile=body.profile,
        max_validity_days=body.max_validity_days,
        actor=admin.actor,
    )
    return AcmeEabCreateResponse(kid=credential.kid, hmac_key=credential.hmac_key)
