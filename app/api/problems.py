"""RFC 9457 problem documents: the one place that turns errors into HTTP answers."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: TID251 - mapped here, never raised
from starlette.responses import Response

from app.api.media import PROBLEM_JSON
from app.errors import (
    AcmeProblemError,
    AuthenticationError,
    CSRSignatureError,
    MalformedCSRError,
    MintCAError,
    NameNotAllowedError,
    PermissionDeniedError,
    UnsupportedKeyError,
)
from app.services.acme.telemetry import count_problem

log = logging.getLogger(__name__)

# Problem types are URNs: stable names that clients can match on, with no promise of a page.
TYPE_PREFIX = "urn:mintca:problem:"
_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}


def problem_body(status: int, slug: str, title: str, detail: str, **extra: Any) -> bytes:
    document = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    return json.dumps({**document, **extra}).encode()


def problem_response(status: int, slug: str, title: str, detail: str, **extra: Any) -> Response:
    return Response(
        problem_body(status, slug, title, detail, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
    )


def domain_problem(exc: MintCAError) -> Response:
    """The answer to a domain error, for the app's handler and for fast paths outside the
    app (which must answer byte for byte alike)."""
    if exc.status >= 500:
        log.error("%s: %s", exc.slug, exc.detail)
    response = problem_response(exc.status, exc.slug, exc.title, exc.detail)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # RFC 9110 §10.2.3, for 429 and 503
        response.headers["Retry-After"] = str(retry_after)
    return response


def unexpected_problem(exc: BaseException) -> Response:
    # The cause goes to the log, never to the client.
    log.error("unexpected error", exc_info=exc)
    return problem_response(500, "internal-error", "Internal error", "an internal error occurred")


async def _domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MintCAError)
    return domain_problem(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    # 400, not FastAPI's 422: schema-invalid input is a bad request to curl users too.
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(
        400, "invalid-request", "Invalid request", detail or "invalid request", errors=errors
    )


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, MintCAError):  # FastAPI wraps body-read errors (413) in a 400
        return await _domain_error(_request, exc.__cause__)
    slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
    title = slug.replace("-", " ").capitalize()
    response = problem_response(exc.status_code, slug, title, str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405 (RFC 9110 §15.5.6)
    return response


async def _unexpected_error(_request: Request, exc: Exception) -> Response:
    return unexpected_problem(exc)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MintCAError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


# --- ACME (RFC 8555 §6.7): the same errors, typed for ACME clients ------------------------------

ACME_TYPE_PREFIX = "urn:ietf:params:acme:error:"


def acme_type_of(exc: MintCAError) -> str:
    """The RFC 8555 §6.7 type of a domain error raised under /acme/."""
    if isinstance(exc, AcmeProblemError):
        return exc.acme_type
    if isinstance(exc, NameNotAllowedError):
        return "rejectedIdentifier"
    if isinstance(exc, MalformedCSRError | CSRSignatureError | UnsupportedKeyError):
        return "badCSR"
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return "unauthorized"
    return "serverInternal" if exc.status >= 500 else "malformed"


def acme_problem_response(status: int, acme_type: str, detail: str) -> Response:
    count_problem(acme_type)  # every ACME problem answered passes here (mintca_acme_problems)
    body = {"type": ACME_TYPE_PREFIX + acme_type, "detail": detail, "status": status}
    return Response(json.dumps(body).encode(), status_code=status, media_type=PROBLEM_JSON)


async def _acme_domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MintCAError)
    if exc.status >= 500:
        log.error("%s: %s", exc.slug, exc.detail)
        return acme_problem_response(exc.status, acme_type_of(exc), "an internal error occurred")
    return acme_problem_response(exc.status, acme_type_of(exc), exc.detail)


async def _acme_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return acme_problem_response(400, "malformed", "the request does not fit the resource")


async def _acme_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, MintCAError):
        return await _acme_domain_error(request, exc.__cause__)
    response = acme_problem_response(exc.status_code, "malformed", str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _acme_unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unexpected error", exc_info=exc)
    return acme_problem_response(500, "serverInternal", "an internal error occurred")


def install_acme_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MintCAError, _acme_domain_error)
    app.add_exception_handler(RequestValidationError, _acme_validation_error)
    app.add_exception_handler(StarletteHTTPException, _acme_http_error)
    app.add_exception_handler(Exception, _acme_unexpected_error)
