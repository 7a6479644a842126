"""The directory and newNonce (RFC 8555 §7.1.1, §7.2)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.routes.acme.common import acme_json

router = APIRouter(tags=["acme"])


@router.get("/directory")
def directory(services: ServicesDep) -> Response:
    urls = services.acme.urls
    return acme_json(
        {
            "newNonce": urls("new-nonce"),
            "newAccount": urls("new-account"),
            "newOrder": urls("new-order"),
            "revokeCert": urls("revoke-cert"),
            "keyChange": urls("key-change"),
            "meta": {"externalAccountRequired": services.acme.accounts.eab_required},
        }
    )


@router.head("/new-nonce")
def new_nonce_head() -> Response:
    """The nonce itself is added by AcmeHeaders, as on every ACME answer."""
    return Response(status_code=200)


@router.get("/new-nonce")
def new_nonce_get() -> Response:
    return Response(status_code=204)  # RFC 8555 §7.2: 204 for GET
