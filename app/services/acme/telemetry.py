"""Per-process ACME events for /metrics: validation attempts (retries included, which the
database forgets once a challenge settles) and the problem documents answered, by type.

Registered with app.services.telemetry's EVENTS, so they share its multiprocess handling
(summed over the host's workers at scrape time). What the ACME tables know is read at scrape
time instead (app.services.acme.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from app.services.telemetry import EVENTS

VALIDATION_ATTEMPTS = Counter(
    "mintca_acme_validation_attempts",
    "Challenge validation attempts by challenge type and outcome: valid, retry (failed, to be "
    "tried again, RFC 8555 §8.2) or invalid (failed for good).",
    ["type", "outcome"],
    registry=EVENTS,
)
PROBLEMS = Counter(
    "mintca_acme_problems",
    "ACME problem documents answered, by RFC 8555 §6.7 type (badNonce, malformed, ...).",
    ["type"],
    registry=EVENTS,
)


def count_validation_attempt(challenge_type: str, outcome: str) -> None:
    VALIDATION_ATTEMPTS.labels(challenge_type, outcome).inc()


def count_problem(acme_type: str) -> None:
    PROBLEMS.labels(acme_type).inc()
