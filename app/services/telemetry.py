"""Per-process events for /metrics: OCSP answers by status and HTTP request latency.

These live in process memory, or, under `mintca serve`, in prometheus-client's multiprocess
files (PROMETHEUS_MULTIPROC_DIR, made by the server before its workers start), which the
scrape sums over every worker of the host. What the database knows is not counted here: the
scrape reads it (app.services.metrics)."""

from __future__ import annotations

import os
from collections.abc import Sequence

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

# When one answer covers several certificates, it is counted under the gravest status.
_GRAVITY = {"good": 0, "unknown": 1, "revoked": 2}


def multiprocess_dir() -> str | None:
    """Where the workers' values are, when they are in files (prometheus-client reads the
    variable once, when it is first imported: `mintca serve` sets it before that)."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def count_ocsp_answer(statuses: Sequence[str]) -> None:
    """Count one OCSP answer: the certificate statuses it carries (one per CertID) or its one
    error status. An answer about several certificates counts once, under the gravest."""
    gravest = max(statuses, key=_gravity, default="successful")
    counter = _ocsp_counters.get(gravest)
    if counter is None:  # the labelled child, looked up once (this runs per OCSP answer)
        counter = _ocsp_counters[gravest] = OCSP_RESPONSES.labels(gravest)
    counter.inc()


_ocsp_counters: dict[str, Counter] = {}


def _gravity(status: str) -> int:
    return _GRAVITY.get(status, len(_GRAVITY))
