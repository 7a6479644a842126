"""The ACME metric families, built from app.db.acme_stats at scrape time (so every worker and
replica agrees). Every known status and challenge type gets a series, zero included, so an
alert on a rate or a ratio has a series to read before the first event."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.db.acme_stats import AcmeCounts

ACCOUNT_STATUSES = ("valid", "deactivated", "revoked")
ORDER_STATUSES = ("pending", "ready", "processing", "valid", "invalid")
AUTHORIZATION_STATUSES = ("pending", "valid", "invalid", "deactivated", "expired")
CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")


def acme_metrics(counts: AcmeCounts) -> Iterable[Metric]:
    yield _by_status(
        "mintca_acme_accounts", "ACME accounts by status.", counts.accounts, ACCOUNT_STATUSES
    )
    yield _by_status(
        "mintca_acme_orders",
        "ACME orders by status as clients read it (an expired pending or ready order is invalid).",
        counts.orders,
        ORDER_STATUSES,
    )
    yield _by_status(
        "mintca_acme_authorizations",
        "ACME authorizations by status as clients read it (an expired pending one is expired).",
        counts.authorizations,
        AUTHORIZATION_STATUSES,
    )
    yield from _challenge_metrics(counts.challenges)
    issued = CounterMetricFamily(
        "mintca_acme_certificates_issued",
        "Certificates issued through ACME (finalized orders), by CA and profile.",
        labels=["ca_id", "profile"],
    )
    for ca_id, profile, count in counts.certificates:
        issued.add_metric([ca_id, profile], count)
    yield issued


def _by_status(
    name: str, documentation: str, counts: dict[str, int], known: tuple[str, ...]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in dict.fromkeys((*known, *counts)):  # known first, then anything unexpected
        family.add_metric([status], counts.get(status, 0))
    return family


def _challenge_metrics(counts: dict[tuple[str, str], int]) -> Iterable[Metric]:
    validated = CounterMetricFamily(
        "mintca_acme_challenges_validated",
        "ACME challenges validated, by challenge type (each validates its authorization).",
        labels=["type"],
    )
    failed = CounterMetricFamily(
        "mintca_acme_challenges_failed",
        "ACME challenges failed for good after their retries, by challenge type (each makes "
        "its authorization and order invalid).",
        labels=["type"],
    )
    processing = GaugeMetricFamily(
        "mintca_acme_challenges_processing",
        "ACME challenges waiting for the background validator or a retry, by challenge type.",
        labels=["type"],
    )
    types = dict.fromkeys((*CHALLENGE_TYPES, *(kind for kind, _ in counts)))
    for kind in types:
        validated.add_metric([kind], counts.get((kind, "valid"), 0))
        failed.add_metric([kind], counts.get((kind, "invalid"), 0))
        processing.add_metric([kind], counts.get((kind, "processing"), 0))
    return (validated, failed, processing)
