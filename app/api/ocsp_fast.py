"""The OCSP fast path: a raw ASGI layer in front of the public app that answers a request
whose bytes (the GET path's DER, the POST body) were answered before, from the OCSP cache:
no routing, no ASN.1 parsing, no database. Everything else goes on to the FastAPI app, which
fills the cache. Both paths send the same bytes and headers (app.api.ocsp_http).
`OCSPFastAnswers` is the same lookup without ASGI, for the HTTP protocol of app.server that
answers before uvicorn builds a request cycle."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.limits import read_body
from app.api.ocsp_http import Headers, decode_get_request, response_headers
from app.api.request_metrics import observe_request
from app.clock import Clock
from app.services.ocsp import OCSPService

_GET_PREFIX = "/ocsp/"


class OCSPFastAnswers:
    """The cache's answer to a request, as the headers and body to send, without ASGI."""

    def __init__(self, ocsp: OCSPService, clock: Clock) -> None:
        self._ocsp = ocsp
        self._clock = clock

    def find(self, method: str, path: str, body: bytes | None) -> tuple[Headers, bytes] | None:
        """Headers and DER for `method path` (the decoded path, no query) with this body, when
        the cache can answer it; None sends the request on to the app."""
        if method == "POST":
            if path != "/ocsp" or body is None:
                return None
            answer = self._ocsp.answer_cached(body)
            return None if answer is None else (response_headers(answer, now=None), answer.der)
        if method != "GET" or not path.startswith(_GET_PREFIX):
            return None
        request_der = decode_get_request(path[len(_GET_PREFIX) :])
        answer = self._ocsp.answer_cached(request_der) if request_der else None
        if answer is None:
            return None
        # GET answers carry caching headers (RFC 5019 §6).
        return response_headers(answer, now=self._clock.now()), answer.der

    @staticmethod
    def observe(method: str, path: str, seconds: float) -> None:
        """Time an answer sent without the app, as RequestMetrics times the app's answers."""
        observe_request("public", method, {"path": path}, 200, seconds)


class OCSPFastPath:
    def __init__(self, app: ASGIApp, ocsp: OCSPService, clock: Clock) -> None:
        self.app = app
        self._answers = OCSPFastAnswers(ocsp, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method: str = scope["method"]
            found = None
            if method == "GET":
                found = self._answers.find(method, scope["path"], None)
            elif method == "POST" and scope["path"] == "/ocsp":
                body, receive = await read_body(scope, receive)
                found = self._answers.find(method, scope["path"], body)
            if found is not None:
                await send({"type": "http.response.start", "status": 200, "headers": found[0]})
                await send({"type": "http.response.body", "body": found[1]})
                return
        await self.app(scope, receive, send)
