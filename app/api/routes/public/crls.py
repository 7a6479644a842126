"""CRLs: the latest full CRL (DER and PEM) and the latest delta CRL, with caching headers."""

from __future__ import annotations

import base64
import textwrap

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import PEM_FILE, PKIX_CRL, http_date
from app.services.crls import PublishedCRL

router = APIRouter(prefix="/crl", tags=["crl"])
# Caches may keep a CRL until its nextUpdate (RFC 5280), but a revocation publishes a new one
# at once: a short max-age plus ETag revalidation lets relying parties see it within minutes.
MAX_AGE_SECONDS = 300


def _answer(
    request: Request, services: ServicesDep, crl: PublishedCRL, body: bytes, media_type: str
) -> Response:
    etag = f'"{crl.ca_id}-{crl.number}"'
    remaining = int((crl.next_update - services.clock.now()).total_seconds())
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(crl.this_update),
        "Cache-Control": f"public, max-age={max(0, min(MAX_AGE_SECONDS, remaining))}",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/{ca_id}-delta.crl", response_class=Response)
def delta_crl(ca_id: str, request: Request, services: ServicesDep) -> Response:
    crl = services.crls.latest(ca_id, delta=True)
    return _answer(request, services, crl, crl.der, PKIX_CRL)


@router.get("/{ca_id}.crl", response_class=Response)
def full_crl(ca_id: str, request: Request, services: ServicesDep) -> Response:
    crl = services.crls.latest(ca_id)
    return _answer(request, services, crl, crl.der, PKIX_CRL)


@router.get("/{ca_id}.pem", response_class=Response)
def full_crl_pem(ca_id: str, request: Request, services: ServicesDep) -> Response:
    crl = services.crls.latest(ca_id)
    body = "\n".join(textwrap.wrap(base64.b64encode(crl.der).decode(), 64))
    text = f"-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n"
    return _answer(request, services, crl, text.encode(), PEM_FILE)
