"""CA certificates: the root and chain as PEM, each CA as DER (the AIA caIssuers URL)."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import PEM_FILE, PKIX_CERT, pem
from app.errors import NotFoundError

router = APIRouter(prefix="/ca", tags=["ca"])
CACHE = "public, max-age=3600"


@router.get("/root.pem", response_class=Response)
def root_pem(services: ServicesDep) -> Response:
    root = services.keyring.root()
    return Response(pem(root.certificate), media_type=PEM_FILE, headers={"Cache-Control": CACHE})


@router.get("/chain.pem", response_class=Response)
def chain_pem(services: ServicesDep) -> Response:
    """The active issuing CA, then its parents up to the root."""
    chain = services.keyring.chain(services.keyring.active_issuer())
    return Response(pem(*chain), media_type=PEM_FILE, headers={"Cache-Control": CACHE})


@router.get("/{name}.crt", response_class=Response)
def ca_certificate(name: str, services: ServicesDep) -> Response:
    authority = services.keyring.find(name)
    if authority is None:
        raise NotFoundError(f"no CA with id {name[:80]!r}")
    return Response(
        authority.certificate.public_bytes(Encoding.DER),
        media_type=PKIX_CERT,
        headers={"Cache-Control": CACHE},
    )
