"""The OCSP responder over HTTP (RFC 6960 appendix A, RFC 5019). Every outcome is DER."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from urllib.parse import unquote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import OCSP_RESPONSE, http_date
from app.ca.ocsp import build_unsuccessful_response
from app.errors import PayloadTooLargeError
from app.services.ocsp import OCSPAnswer
from app.services.telemetry import count_ocsp_answer

router = APIRouter(tags=["ocsp"])
# RFC 5019 §6.2 lets caches keep an answer until nextUpdate; MintCA re-signs at once on
# revocation, so caches are told to come back after a few minutes.
MAX_AGE_SECONDS = 300


def _malformed() -> Response:
    return _answer(
        OCSPAnswer(build_unsuccessful_response("malformed_request")), now=None, get=False
    )


def _answer(answer: OCSPAnswer, *, now: datetime | None, get: bool) -> Response:
    count_ocsp_answer(answer.der)  # /metrics: every OCSP answer sent, by status
    headers = {}
    if get and answer.cacheable and answer.this_update and answer.next_update and now:
        remaining = int((answer.next_update - now).total_seconds())
        headers = {
            "Cache-Control": f"public, max-age={max(0, min(MAX_AGE_SECONDS, remaining))}, "
            "no-transform, must-revalidate",
            "ETag": f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"',
            "Last-Modified": http_date(answer.this_update),
            "Expires": http_date(answer.next_update),
        }
    return Response(answer.der, media_type=OCSP_RESPONSE, headers=headers)


@router.post("/ocsp", response_class=Response)
async def ocsp_post(request: Request, services: ServicesDep) -> Response:
    try:
        body = await request.body()
    except PayloadTooLargeError:
        return _malformed()
    answer = await run_in_threadpool(services.ocsp.respond, body)
    return _answer(answer, now=None, get=False)


@router.get("/ocsp/{encoded:path}", response_class=Response)
async def ocsp_get(encoded: str, services: ServicesDep) -> Response:
    """The request is base64 of the DER, URL-encoded or not (RFC 6960 §A.1)."""
    text = unquote(encoded).strip()
    try:
        request_der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return _malformed()
    answer = await run_in_threadpool(services.ocsp.respond, request_der)
    return _answer(answer, now=services.clock.now(), get=True)
