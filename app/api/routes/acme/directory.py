"""The directory and newNonce (RFC 8555 §7.1.1, §7.2)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.routes.acme.common import acme_json, rfc3339

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
            "renewalInfo": urls("renewal-info"),
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


RENEWAL_INFO_RETRY_SECONDS = 6 * 3600  # RFC 9773 §4.3: clients poll again after this


@router.get("/renewal-info/{cert_id}")
def renewal_info(cert_id: str, services: ServicesDep) -> Response:
    """RFC 9773: an unauthenticated GET naming the certificate by AKI and serial."""
    start, end = services.acme.certificates.renewal_window(cert_id)
    response = acme_json({"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}})
    response.headers["Retry-After"] = str(RENEWAL_INFO_RETRY_SECONDS)
    return response
