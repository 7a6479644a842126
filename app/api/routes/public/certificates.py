"""Enrollment with a token (JSON or a raw PKCS#10 body) and the public certificate status."""

from __future__ import annotations

import functools
import ipaddress

from cryptography import x509
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.media import PEM_CHAIN, PKCS10, media_type_of, pem
from app.api.ratelimit import EnrollmentLimiter
from app.api.schemas import EnrollRequest, IssuedResponse, StatusResponse
from app.config import Settings
from app.errors import InvalidRequestError, TLSRequiredError, UnsupportedMediaTypeError
from app.services.enrollment import IssuedCertificate

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])


@functools.lru_cache(maxsize=64)
def _ca_pem(certificate: x509.Certificate) -> str:
    """CA certificates are few and never change: each is PEM-encoded once per process."""
    return pem(certificate)


def issued_response(issued: IssuedCertificate) -> IssuedResponse:
    return IssuedResponse(
        serial=issued.serial,
        certificate=pem(issued.certificate),
        chain=[_ca_pem(c) for c in issued.chain],
        not_before=issued.certificate.not_valid_before_utc,
        not_after=issued.certificate.not_valid_after_utc,
        profile=issued.profile,
    )


@functools.lru_cache(maxsize=256)  # a client's address is checked on each of its requests
def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8 and ::1 (also as an IPv4-mapped IPv6 address); names never count."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_transport(scheme: str | None, client_host: str | None, settings: Settings) -> None:
    """A token is a credential: it travels only over TLS, except from loopback when the
    operator allowed it (MINTCA_ALLOW_INSECURE_TOKENS=true, for a first local session).
    `scheme` is the ASGI scope's (uvicorn says https for TLS connections only).

    Raises:
        TLSRequiredError: plain HTTP from anywhere else.
    """
    if scheme == "https":
        return
    if settings.allow_insecure_tokens and is_loopback(client_host):
        return
    raise TLSRequiredError(
        "enrollment tokens are accepted only over TLS (MINTCA_PUBLIC_TLS=true); plain HTTP "
        "only from loopback with MINTCA_ALLOW_INSECURE_TOKENS=true"
    )


def enrollment_limiter(state: State, settings: Settings) -> EnrollmentLimiter:
    """The app's one limiter (`state.enroll_limiter`), made on first use unless the enrollment
    fast path in front of the app made it first, to share it. Only the event loop calls this,
    so no two callers make it at once."""
    limiter: EnrollmentLimiter | None = getattr(state, "enroll_limiter", None)
    if limiter is None:
        limiter = state.enroll_limiter = EnrollmentLimiter(settings)
    return limiter


def bearer_token(authorization: str) -> str | None:
    """The credentials of an `Authorization: Bearer ...` header value, else None."""
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def issued_json(issued: IssuedCertificate) -> Response:
    """The 201 of a JSON enrollment (the route's and the fast path's)."""
    return Response(
        issued_response(issued).model_dump_json(), status_code=201, media_type="application/json"
    )


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
    client_host = request.client.host if request.client else None
    check_transport(request.scope.get("scheme"), client_host, services.settings)
    token = bearer_token(request.headers.get("authorization", ""))
    enrollment_limiter(request.app.state, services.settings).check(client_host, token)
    media_type = media_type_of(request.headers.get("content-type"))
    if media_type not in ("application/json", PKCS10):
        raise UnsupportedMediaTypeError(
            f"send application/json or {PKCS10}, not {media_type or 'no content type'!r}"
        )
    body = await request.body()
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
    return issued_json(issued)


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
