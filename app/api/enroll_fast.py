"""The enrollment fast path: a raw ASGI layer in front of the public app that takes the common
case of `POST /v1/certificates` — a plain JSON body, a token this process authenticated within
the grant cache's lifetime — past FastAPI's routing, middleware, dependency solving and thread
pool: it checks and signs on the event loop and awaits the group commit's future. Anything else
(another media type, an odd body, an uncached or missing token, plain HTTP where tokens need
TLS, a body over the limit) goes on untouched to the FastAPI route, which stays the authority.
Both paths answer through the same functions, so the answers are the same byte for byte."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.limits import MAX_BODY_BYTES, read_body
from app.api.media import media_type_of
from app.api.problems import domain_problem, unexpected_problem
from app.api.ratelimit import EnrollmentLimiter
from app.api.routes.public.certificates import bearer_token, check_transport, issued_json
from app.errors import MintCAError
from app.services.container import Services

PATH = "/v1/certificates"
_FIELDS = frozenset({"csr", "profile", "validity_days"})
# Beyond these, validity_days takes the route (pydantic's own integer rules decide there).
_MAX_DAYS = 2**31


@dataclass(frozen=True)
class PlainRequest:
    """A JSON enrollment body in the one shape both paths read the same way."""

    csr: str
    profile: str | None
    validity_days: int | None


class EnrollFastPath:
    def __init__(self, app: ASGIApp, services: Services, limiter: EnrollmentLimiter) -> None:
        self.app = app
        self._services = services
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            answered, receive = await self._enroll(scope, receive, send)
            if answered:
                return
        await self.app(scope, receive, send)

    async def _enroll(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, Receive]:
        """(True, _) when answered here; else (False, a `receive` that replays what was read).
        Nothing with an effect (the rate limit, the signature, the spend) happens before the
        request is known to be one this path answers, so a handed-on request is counted once."""
        headers = _first_headers(scope)
        if media_type_of(headers.get(b"content-type", "")) != "application/json":
            return False, receive
        client = scope.get("client")
        client_host: str | None = client[0] if client else None
        settings = self._services.settings
        try:
            check_transport(scope.get("scheme"), client_host, settings)
        except MintCAError:
            return False, receive
        token = bearer_token(headers.get(b"authorization", ""))
        grant = self._services.tokens.cached_grant(token)
        if token is None or grant is None:  # the route looks it up in the database
            return False, receive
        body, receive = await read_body(scope, receive)
        request = parse_plain_request(body) if body is not None else None
        if request is None:
            return False, receive
        try:
            self._limiter.check(client_host, token)
            future = self._services.enrollment.start(
                grant,
                token=token,
                csr_data=request.csr,
                profile=request.profile,
                validity_days=request.validity_days,
            )
            response = issued_json(await asyncio.wrap_future(future))
        except MintCAError as exc:
            response = domain_problem(exc)
        except Exception as exc:  # the app's handler would answer 500 the same way
            response = unexpected_problem(exc)
        await response(scope, receive, send)
        return True, receive


def _first_headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each header, as Starlette's `request.headers.get` reads it."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name not in found:
            found[name] = value.decode("latin-1")
    return found


def parse_plain_request(body: bytes) -> PlainRequest | None:
    """The body as a PlainRequest when it is strict UTF-8 JSON of one object with only the
    known keys, once each, `csr` an ASCII string and the others null or of their exact type;
    None for anything else, which the route's pydantic model then judges."""
    try:
        value = json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_refuse
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or "csr" not in value or not value.keys() <= _FIELDS:
        return None
    csr, profile, days = value["csr"], value.get("profile"), value.get("validity_days")
    if not (isinstance(csr, str) and csr.isascii() and len(csr) <= MAX_BODY_BYTES):
        return None
    if profile is not None and not (isinstance(profile, str) and profile.isascii()):
        return None
    if days is not None and (type(days) is not int or not -_MAX_DAYS < days < _MAX_DAYS):
        return None
    return PlainRequest(csr, profile, days)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = {key for key, _ in pairs}
    if len(keys) != len(pairs):
        raise ValueError("a key appears twice")  # which one counts is the parser's choice
    return dict(pairs)


def _refuse(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")
