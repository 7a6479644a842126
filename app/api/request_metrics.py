"""Request latency per route as a small ASGI wrapper. Labels use the route template
(`/crl/{ca_id}.crl`), never the raw path, so a scan of random URLs adds no series.

The template comes from the route FastAPI matched (`scope["route"]`, set while routing).
Paths answered before FastAPI routes them (an OCSP fast path in front of the app) fall back to
a fixed template table; anything else is `unmatched`."""

from __future__ import annotations

import time

from prometheus_client import Histogram
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
    if raw.startswith("/admin/certificates/") and raw.endswith("/revoke"):
        return "/admin/certificates/{serial}/revoke"  # the revocation fast path
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
            observe_request(
                self.listener, scope["method"], scope, status, time.perf_counter() - start
            )


def observe_request(listener: str, method: str, scope: Scope, status: int, seconds: float) -> None:
    """One request's latency, under its route template (an HTTP protocol that answers OCSP
    before the app passes a scope of just the path)."""
    labels = (listener, method if method in METHODS else "other", route_template(scope), status)
    histogram = _histograms.get(labels)
    if histogram is None:  # the labelled child, looked up once per label set
        histogram = _histograms[labels] = HTTP_REQUEST_DURATION.labels(*labels[:3], str(status))
    histogram.observe(seconds)


# Bounded: a few listeners, methods, route templates and HTTP statuses.
_histograms: dict[tuple[str, str, str, int], Histogram] = {}
