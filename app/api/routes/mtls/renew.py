"""`POST /v1/renew`: any valid certificate of MintCA renews itself over the mtls listener."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CertificateDep, ServicesDep
from app.api.routes.public.certificates import issued_response
from app.api.schemas import IssuedResponse, RenewRequest

router = APIRouter(prefix="/v1", tags=["renewal"])


@router.post("/renew", status_code=201)
def renew(body: RenewRequest, peer: CertificateDep, services: ServicesDep) -> IssuedResponse:
    """A successor of the presented certificate: same names and profile, the CSR's key."""
    issued = services.renewal.renew(peer.serial, csr_data=body.csr, actor=peer.actor)
    return issued_response(issued)
