"""The OCSP responder over HTTP (RFC 6960 appendix A, RFC 5019). Every outcome is DER.

Nonce-less requests already answered, and nonce requests for the same certificates, are
answered by `app.api.ocsp_fast.OCSPFastPath` before they reach these routes."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import OCSP_RESPONSE
from app.api.ocsp_http import decode_get_request, response_headers
from app.ca.ocsp import build_unsuccessful_response
from app.errors import PayloadTooLargeError
from app.services.ocsp import OCSPAnswer
from app.services.telemetry import count_ocsp_answer

router = APIRouter(tags=["ocsp"])


def _malformed() -> Response:
    """For what never reaches the OCSP service (an oversize body, a GET path that is not
    base64); counted here as the service counts its own answers."""
    count_ocsp_answer(("malformed_request",))
    return Response(build_unsuccessful_response("malformed_request"), media_type=OCSP_RESPONSE)


def _answer(answer: OCSPAnswer, *, now: datetime | None) -> Response:
    response = Response(answer.der)
    response.raw_headers = response_headers(answer, now=now)
    return response


@router.post("/ocsp", response_class=Response)
async def ocsp_post(request: Request, services: ServicesDep) -> Response:
    try:
        body = await request.body()
    except PayloadTooLargeError:
        return _malformed()
    answer = await run_in_threadpool(services.ocsp.respond, body)
    return _answer(answer, now=None)


@router.get("/ocsp/{encoded:path}", response_class=Response)
async def ocsp_get(encoded: str, services: ServicesDep) -> Response:
    """The request is base64 of the DER, URL-encoded or not (RFC 6960 §A.1)."""
    request_der = decode_get_request(encoded)
    if request_der is None:
        return _malformed()
    answer = await run_in_threadpool(services.ocsp.respond, request_der)
    return _answer(answer, now=services.clock.now())
