"""Per-process events for /metrics: OCSP answers by status and HTTP request latency.

These live in process memory, or, under `mintca serve`, in prometheus-client's multiprocess
files (PROMETHEUS_MULTIPROC_DIR, made by the server before its workers start), which the
scrape sums over every worker of the host. What the database knows is not counted here: the
scrape reads it (app.services.metrics)."""

from __future__ import annotations

import os

from cryptography.x509 import ocsp
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# `_created` series add a line per series and nothing an operator uses (multiprocess mode
# leaves them out anyway, so single- and multi-process scrapes look alike).
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client

# The events of this process; exposed directly when not in multiprocess mode.
EVENTS = CollectorRegistry(auto_describe=True)

OCSP_RESPONSES = Counter(
    "mintca_ocsp_responses",
    "OCSP answers: the certificate status (good, revoked, unknown) or the error status.",
    ["status"],
    registry=EVENTS,
)
HTTP_REQUEST_DURATION = Histogram(
    "mintca_http_request_duration_seconds",
    "Time from request to the end of the response, by listener and route template.",
    ["listener", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=EVENTS,
)

# RFC 6960 §4.2.1 OCSPResponseStatus values, by their codes.
_RESPONSE_STATUS = {
    0: "successful",
    1: "malformed_request",
    2: "internal_error",
    3: "try_later",
    5: "sig_required",
    6: "unauthorized",
}
# When one answer covers several certificates, it is counted under the gravest status.
_GRAVITY = {"good": 0, "unknown": 1, "revoked": 2}


def multiprocess_dir() -> str | None:
    """Where the workers' values are, when they are in files (prometheus-client reads the
    variable once, when it is first imported: `mintca serve` sets it before that)."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def count_ocsp_answer(der: bytes) -> None:
    """Count one OCSP answer by its status. Works on the DER alone, so any layer that sends
    OCSP answers (the route, a raw ASGI fast path, a cache) can call it."""
    OCSP_RESPONSES.labels(ocsp_answer_status(der)).inc()


def ocsp_answer_status(der: bytes) -> str:
    # An unsuccessful OCSPResponse is SEQUENCE { ENUMERATED status } and nothing else.
    if len(der) == 5 and der[:4] == b"\x30\x03\x0a\x01":
        return _RESPONSE_STATUS.get(der[4], "unknown_error")
    try:
        response = ocsp.load_der_ocsp_response(der)
        statuses = [single.certificate_status.name.lower() for single in response.responses]
    except ValueError:
        return "unparsable"
    return max(statuses, key=lambda status: _GRAVITY.get(status, 0), default="successful")
