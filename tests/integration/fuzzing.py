"""What the fuzzing tests share: a tally of answers (5xx and OCSP internalError are defects),
bounded hypothesis settings, and the idle-versus-after `/health` latency check.

Each fuzzing test records every answer instead of failing at the first, so its report counts
what was tried and lists every server error with the request that caused it.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, Phase, settings

OCSP_RESPONSE = "application/ocsp-response"
# /health may be this much slower after fuzzing than before it (issue 12), once the server
# has had a few seconds to finish what timed-out requests left behind.
HEALTH_MARGIN_SECONDS = 0.050
HEALTH_SAMPLES = 25
HEALTH_ATTEMPTS = 5
HEALTH_PAUSE_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 15
SHOWN_ERRORS = 20
T = TypeVar("T")
INT4_MAX = 2**31 - 1


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for a bounded run against a live server: a fixed number of cases,
    no shrinking (failures are collected, not raised), no example database in the work tree,
    a generous per-case deadline (2 cores shared by the whole suite), no health checks that
    would stop a slow-but-correct run."""
    return settings(
        max_examples=max_examples,
        deadline=timedelta(seconds=REQUEST_TIMEOUT_SECONDS + 5),
        phases=[Phase.explicit, Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


@dataclass
class Tally:
    """Answers by status; every 5xx (and every OCSP internalError) with its request."""

    name: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    last_status: int = 0

    def send(self, send: Callable[[], T], transport_errors: tuple[type[Exception], ...]) -> T:
        """`send()`, once more on a fresh connection when the server dropped the connection
        right after a 5xx: uvicorn closes a kept-alive connection whose request raised, and
        that 5xx is already counted. Any other transport error propagates."""
        try:
            return send()
        except transport_errors:
            if self.last_status < 500:
                raise
        return send()

    def record(
        self, request: str, status: int, content_type: str, body: bytes, *, known: str | None
    ) -> None:
        """`known`: the known defect this request would show, if any (see `known_defect`)."""
        self.cases += 1
        self.statuses[status] += 1
        self.last_status = status
        if status >= 500 and known:
            self.known.add(known)
        elif status >= 500:
            self.errors.append(f"{status} for {request}: {body[:300]!r}")
        elif content_type.startswith(OCSP_RESPONSE) and _ocsp_internal_error(body):
            self.errors.append(f"OCSP internalError for {request}")

    def record_no_answer(self, request: str, error: Exception) -> None:
        """A timeout or a dropped connection: counted as a server error (status 0)."""
        self.cases += 1
        self.statuses[0] += 1
        self.last_status = 0
        self.errors.append(f"no answer ({type(error).__name__}: {error}) for {request}")

    def report(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        shown = "\n".join(self.errors[:SHOWN_ERRORS])
        known = "".join(f"\nknown defect seen (not counted): {k}" for k in sorted(self.known))
        return (
            f"{self.name}: {self.cases} cases, {len(self.errors)} server errors "
            f"(5xx, OCSP internalError or no answer); statuses {{{statuses}}}{known}\n{shown}"
        ).rstrip()


def known_defect(path: str, query: Mapping[str, Any], *, postgresql: bool) -> str | None:
    """A 5xx that is reported and belongs to another engineer's work in progress, so the
    fuzzers count it apart (and print it) instead of failing. Each entry is held by a strict
    xfail in tests/api/test_known_defects.py: when its fix lands that test passes, fails as
    XPASS, and the entry and the xfail go together."""
    return None


def _ocsp_internal_error(body: bytes) -> bool:
    try:
        status = ocsp.load_der_ocsp_response(body).response_status
    except ValueError:
        return True  # the responder must always answer DER that parses
    return status in (ocsp.OCSPResponseStatus.INTERNAL_ERROR, ocsp.OCSPResponseStatus.TRY_LATER)


def health_latency(public_url: str, verify: object = True) -> float:
    """Median seconds of HEALTH_SAMPLES sequential `GET /health` on one kept-alive
    connection (the first request, which opens it, is not counted)."""
    with httpx.Client(base_url=public_url, timeout=10, verify=verify) as client:  # type: ignore[arg-type]
        client.get("/health").raise_for_status()
        timings = []
        for _ in range(HEALTH_SAMPLES):
            began = time.perf_counter()
            answer = client.get("/health")
            timings.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text
    return statistics.median(timings)


def latency_after(public_url: str, idle: float, verify: object = True) -> float:
    """The best of up to HEALTH_ATTEMPTS medians, a pause apart, stopping as soon as one is
    within the margin: work still draining for a moment is fine, lasting slowness is not."""
    best = float("inf")
    for attempt in range(HEALTH_ATTEMPTS):
        if attempt:
            time.sleep(HEALTH_PAUSE_SECONDS)
        best = min(best, health_latency(public_url, verify))
        if best <= idle + HEALTH_MARGIN_SECONDS:
            break
    return best


def latency_line(idle: float, after: float) -> str:
    return f"/health median {idle * 1000:.1f} ms idle, {after * 1000:.1f} ms after fuzzing"
