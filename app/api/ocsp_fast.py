"""The OCSP fast path: a raw ASGI layer in front of the public app that answers a request
whose bytes (the GET path's DER, the POST body) were answered before, from the OCSP cache:
no routing, no ASN.1 parsing, no database. Everything else goes on to the FastAPI app, which
fills the cache. Both paths send the same bytes and headers (app.api.ocsp_http)."""

from __future__ import annotations

from datetime import datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.limits import MAX_BODY_BYTES
from app.api.ocsp_http import decode_get_request, response_headers
from app.clock import Clock
from app.services.ocsp import OCSPAnswer, OCSPService

_GET_PREFIX = "/ocsp/"


class OCSPFastPath:
    def __init__(self, app: ASGIApp, ocsp: OCSPService, clock: Clock) -> None:
        self.app = app
        self._ocsp = ocsp
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "GET" and path.startswith(_GET_PREFIX):
                request_der = decode_get_request(path[len(_GET_PREFIX) :])
                answer = self._ocsp.answer_cached(request_der) if request_der else None
                if answer is not None:
                    await _send(send, answer, now=self._clock.now())
                    return
            elif method == "POST" and path == "/ocsp":
                body, receive = await _read_body(scope, receive)
                answer = self._ocsp.answer_cached(body) if body is not None else None
                if answer is not None:
                    await _send(send, answer, now=None)
                    return
        await self.app(scope, receive, send)


async def _send(send: Send, answer: OCSPAnswer, *, now: datetime | None) -> None:
    """`now` for GET answers, which carry caching headers (RFC 5019 §6)."""
    headers = response_headers(answer, now=now)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.der})


async def _read_body(scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole body, and a `receive` that replays it for the app behind; (None, receive
    untouched) when it is declared larger than the limit, which the app then enforces."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
            return None, receive
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, _replay(messages, receive)
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            return None, _replay(messages, receive)
        if not message.get("more_body", False):
            return b"".join(chunks), _replay(messages, receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
