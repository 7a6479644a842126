"""Enrollment with a token (JSON or a raw PKCS#10 body) and the public certificate status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import PEM_CHAIN, PKCS10, media_type_of, pem
from app.api.schemas import EnrollRequest, IssuedResponse, StatusResponse
from app.errors import InvalidRequestError, UnsupportedMediaTypeError
from app.services.enrollment import IssuedCertificate

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])


def issued_response(issued: IssuedCertificate) -> IssuedResponse:
    return IssuedResponse(
        serial=issued.serial,
        certificate=pem(issued.certificate),
        chain=[pem(c) for c in issued.chain],
        not_before=issued.certificate.not_valid_before_utc,
        not_after=issued.certificate.not_valid_after_utc,
        profile=issued.profile,
    )


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


@router.post(
    "",
    status_code=201,
    response_model=IssuedResponse,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": EnrollRequest.model_json_schema()},
                PKCS10: {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def enroll(request: Request, services: ServicesDep) -> Response:
    """Enroll a CSR with `Authorization: Bearer <token>`: JSON in, JSON out; or a raw
    `application/pkcs10` body (PEM or DER) in, `application/pem-certificate-chain` out."""
    media_type = media_type_of(request.headers.get("content-type"))
    if media_type not in ("application/json", PKCS10):
        raise UnsupportedMediaTypeError(
            f"send application/json or {PKCS10}, not {media_type or 'no content type'!r}"
        )
    body = await request.body()
    token = _bearer(request)
    if media_type == PKCS10:
        issued = await run_in_threadpool(services.enrollment.enroll, token=token, csr_data=body)
        chain = pem(issued.certificate, *issued.chain)
        return Response(chain, status_code=201, media_type=PEM_CHAIN)
    try:
        payload = EnrollRequest.model_validate_json(body)
    except ValidationError as exc:
        # A body read by hand: pydantic's error must become a 400, not a 500.
        raise InvalidRequestError(_describe(exc)) from exc
    issued = await run_in_threadpool(
        services.enrollment.enroll,
        token=token,
        csr_data=payload.csr,
        profile=payload.profile,
        validity_days=payload.validity_days,
    )
    return Response(
        issued_response(issued).model_dump_json(), status_code=201, media_type="application/json"
    )


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


@router.get("/{serial}/status")
def certificate_status(serial: str, services: ServicesDep) -> StatusResponse:
    info = services.certificates.get(serial)
    return StatusResponse(
        serial=info.serial,
        status=info.status(services.clock.now()),
        not_after=info.not_after,
        revoked_at=info.revoked_at,
        reason=info.revocation_reason,
    )
