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
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.limits import MAX_BODY_BYTES, read_body
from app.api.media import media_type_of
from app.api.problems import domain_problem, unexpected_problem
from app.api.ratelimit import EnrollmentLimiter
from app.api.request_metrics import observe_request
from app.api.routes.public.certificates import bearer_token, check_transport, issued_json
from app.errors import MintCAError
from app.services.container import Services
from app.services.enrollment import IssuedCertificate
from app.services.tokens import TokenGrant

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


@dataclass(frozen=True)
class TakenRequest:
    """A request whose head the fast path takes: its bearer token and the token's grant."""

    token: str
    grant: TokenGrant


class EnrollFastAnswers:
    """The fast path's decisions without ASGI: the raw ASGI layer below uses them, and so does
    the public listener's HTTP protocol (app.server.ocsp_protocol), which answers before
    uvicorn builds a request cycle, an ASGI scope and a task for the request."""

    def __init__(self, services: Services, limiter: EnrollmentLimiter) -> None:
        self._services = services
        self.limiter = limiter

    def takes(
        self, headers: dict[bytes, str], scheme: str | None, client_host: str | None
    ) -> TakenRequest | None:
        """The token and its grant when a request with this head is one the fast path answers
        (its body still to be judged by `start`); None sends it on to the route."""
        if media_type_of(headers.get(b"content-type", "")) != "application/json":
            return None
        try:
            check_transport(scheme, client_host, self._services.settings)
        except MintCAError:
            return None
        token = bearer_token(headers.get(b"authorization", ""))
        # None for an uncached token too: the route looks it up in the database.
        grant = None if token is None else self._services.tokens.cached_grant(token)
        return None if token is None or grant is None else TakenRequest(token, grant)

    def start(
        self, taken: TakenRequest, client_host: str | None, body: bytes
    ) -> Future[IssuedCertificate] | None:
        """Check and sign the enrollment in this body and hand its write to the group commit;
        None when the body is not a plain request (the route judges it). Nothing with an
        effect happens before the body is known to be one this path answers.

        Raises:
            MintCAError: a refusal to answer with its problem (`answer`)."""
        request = parse_plain_request(body)
        if request is None:
            return None
        self.limiter.check(client_host, taken.token)
        return self._services.enrollment.start(
            taken.grant,
            token=taken.token,
            csr_data=request.csr,
            profile=request.profile,
            validity_days=request.validity_days,
        )

    @staticmethod
    def observe(status: int, seconds: float) -> None:
        """Time an answer sent without the app, as RequestMetrics times the app's answers."""
        observe_request("public", "POST", {"path": PATH}, status, seconds)

    @staticmethod
    def answer(outcome: Future[IssuedCertificate] | BaseException) -> Response:
        """The route's answer to a finished enrollment, or to what refused or broke it."""
        error = outcome if isinstance(outcome, BaseException) else outcome.exception()
        if error is None:
            assert not isinstance(outcome, BaseException)
            return issued_json(outcome.result())
        if isinstance(error, MintCAError):
            return domain_problem(error)
        return unexpected_problem(error)  # the app's handler would answer 500 the same way


class EnrollFastPath:
    def __init__(self, app: ASGIApp, answers: EnrollFastAnswers) -> None:
        self.app = app
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            answered, receive = await self._enroll(scope, receive, send)
            if answered:
                return
        await self.app(scope, receive, send)

    async def _enroll(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, Receive]:
        """(True, _) when answered here; else (False, a `receive` that replays what was read).
        A handed-on request has had nothing with an effect done, so it is counted once."""
        headers = first_headers(scope["headers"])
        client = scope.get("client")
        client_host: str | None = client[0] if client else None
        taken = self.answers.takes(headers, scope.get("scheme"), client_host)
        if taken is None:
            return False, receive
        body, receive = await read_body(scope, receive)
        if body is None:
            return False, receive
        try:
            future = self.answers.start(taken, client_host, body)
            if future is None:
                return False, receive
            await asyncio.wrap_future(future)
        except Exception as exc:  # a refusal, or the commit's error (a cancel goes on up)
            response = self.answers.answer(exc)
        else:
            response = self.answers.answer(future)
        await response(scope, receive, send)
        return True, receive


def first_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The first value of each header, as Starlette's `request.headers.get` reads it."""
    found: dict[bytes, str] = {}
    for name, value in headers:
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
