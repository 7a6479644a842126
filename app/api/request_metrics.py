"""Request latency per route as a small ASGI wrapper. Labels use the route template
(`/crl/{ca_id}.crl`), never the raw path, so a scan of random URLs adds no series.

The template comes from the route FastAPI matched (`scope["route"]`, set while routing).
Paths answered before FastAPI routes them (an OCSP fast path in front of the app) fall back to
a fixed template table; anything else is `unmatched`."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.telemetry import HTTP_REQUEST_DURATION

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    raw: str = scope.get("path", "")
    if raw == "/ocsp":
        return "/ocsp"
    if raw.startswith("/ocsp/"):
        return "/ocsp/{encoded:path}"
    if raw == "/v1/certificates":  # the enrollment fast path (app.api.enroll_fast)
        return "/v1/certificates"
    return UNMATCHED


class RequestMetrics:
    def __init__(self, app: ASGIApp, *, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            HTTP_REQUEST_DURATION.labels(
                self.listener, method, route_template(scope), str(status)
            ).observe(time.perf_counter() - start)
