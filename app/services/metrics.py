"""/metrics: what the database knows, read at scrape time, plus the workers' own events.

Certificates, CRLs and expiries come from cheap aggregate queries on every scrape, so any
worker of any replica answers with the same totals. OCSP answers and request latencies are
per-process events (app.services.telemetry), summed over the host's workers by
prometheus-client's multiprocess collector."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from app.clock import Clock
from app.db import stats
from app.db.acme_stats import acme_counts
from app.db.engine import Database
from app.services.acme.metrics import acme_metrics
from app.services.telemetry import EVENTS, multiprocess_dir

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version reads
EXPIRING_WITHIN = timedelta(days=14)
# MintCA replaces its delegated OCSP responder certificates itself (they live 7 days): in the
# expiry metrics they would only hide the certificates an operator has to renew.
SELF_RENEWED_PROFILES = ("ocsp",)
_EXPIRING_LABEL = "14d"


class DatabaseCollector:
    """Gauges and counters computed from the database on each collect()."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mintca_database_up", "1 when the scrape could read the database.")
        try:
            metrics = list(self._read())
        except Exception:  # a scrape must still answer, saying the database is down
            log.exception("metrics: database read failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self) -> Iterable[Metric]:
        now = self._clock.now()
        with self._db.read() as session:
            counts = stats.certificate_counts(session)
            renewals = stats.renewal_counts(session)
            cas = stats.ca_states(session)
            crls = stats.latest_full_crls(session)
            expiries = stats.expiries(
                session,
                now=now,
                soon=now + EXPIRING_WITHIN,
                exclude_profiles=SELF_RENEWED_PROFILES,
            )
            acme = acme_counts(session, now=now)
        yield from _certificate_metrics(counts, renewals)
        yield from _ca_metrics(cas)
        yield from _crl_metrics(crls, now.timestamp())
        yield from _expiry_metrics(expiries, [ca.ca_id for ca in cas])
        yield from acme_metrics(acme)


def _certificate_metrics(
    counts: list[stats.CertificateCount], renewals: list[tuple[str, str, int]]
) -> Iterable[Metric]:
    issued = CounterMetricFamily(
        "mintca_certificates_issued",
        "Certificates issued (renewals included), by CA and profile.",
        labels=["ca_id", "profile"],
    )
    revoked = GaugeMetricFamily(
        "mintca_certificates_revoked",
        "Certificates revoked now (holds included; an unhold takes one off).",
        labels=["ca_id", "profile"],
    )
    renewed = CounterMetricFamily(
        "mintca_certificates_renewed",
        "Certificates issued by renewal (POST /v1/renew), by CA and profile.",
        labels=["ca_id", "profile"],
    )
    for count in counts:
        issued.add_metric([count.ca_id, count.profile], count.issued)
        revoked.add_metric([count.ca_id, count.profile], count.revoked)
    for ca_id, profile, renewal_count in renewals:
        renewed.add_metric([ca_id, profile], renewal_count)
    return (issued, renewed, revoked)


def _ca_metrics(cas: list[stats.CAState]) -> Iterable[Metric]:
    number = GaugeMetricFamily(
        "mintca_crl_number", "The CA's latest CRL number (full and delta).", labels=["ca_id"]
    )
    not_after = GaugeMetricFamily(
        "mintca_ca_not_after_timestamp_seconds",
        "When the CA certificate expires (Unix time).",
        labels=["ca_id", "kind"],
    )
    active = GaugeMetricFamily(
        "mintca_ca_active", "1 for the issuing CA new enrollments use.", labels=["ca_id"]
    )
    for ca in cas:
        number.add_metric([ca.ca_id], ca.crl_number)
        not_after.add_metric([ca.ca_id, ca.kind], ca.not_after.timestamp())
        active.add_metric([ca.ca_id], int(ca.active))
    return (number, not_after, active)


def _crl_metrics(crls: list[stats.LatestCRL], now: float) -> Iterable[Metric]:
    size = GaugeMetricFamily(
        "mintca_crl_size_bytes", "Size of the CA's latest full CRL (DER).", labels=["ca_id"]
    )
    age = GaugeMetricFamily(
        "mintca_crl_age_seconds",
        "Seconds since the latest full CRL's thisUpdate.",
        labels=["ca_id"],
    )
    next_update = GaugeMetricFamily(
        "mintca_crl_next_update_timestamp_seconds",
        "nextUpdate of the latest full CRL (Unix time).",
        labels=["ca_id"],
    )
    for crl in crls:
        size.add_metric([crl.ca_id], crl.size_bytes)
        age.add_metric([crl.ca_id], max(0.0, now - crl.this_update.timestamp()))
        next_update.add_metric([crl.ca_id], crl.next_update.timestamp())
    return (size, age, next_update)


def _expiry_metrics(expiries: list[stats.Expiry], ca_ids: list[str]) -> Iterable[Metric]:
    soonest = GaugeMetricFamily(
        "mintca_certificate_soonest_expiry_timestamp_seconds",
        "The soonest notAfter among the CA's valid, unrevoked certificates, OCSP responder "
        "certificates aside (Unix time).",
        labels=["ca_id"],
    )
    expiring = GaugeMetricFamily(
        "mintca_certificates_expiring",
        "Valid, unrevoked certificates whose notAfter falls within `within`, OCSP responder "
        "certificates aside.",
        labels=["ca_id", "within"],
    )
    by_ca = {expiry.ca_id: expiry for expiry in expiries}
    for ca_id in ca_ids:  # every CA, so "none expiring" reads 0 rather than no series
        expiry = by_ca.get(ca_id)
        if expiry is not None and expiry.soonest_not_after is not None:
            soonest.add_metric([ca_id], expiry.soonest_not_after.timestamp())
        expiring.add_metric([ca_id, _EXPIRING_LABEL], expiry.expiring_soon if expiry else 0)
    return (soonest, expiring)


class _ThisProcess:
    """The events of this process, when they are not in multiprocess files."""

    def collect(self) -> Iterable[Metric]:
        return EVENTS.collect()


class MetricsService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._database = DatabaseCollector(db, clock)

    def exposition(self) -> bytes:
        """The Prometheus text exposition (CONTENT_TYPE) of every metric."""
        registry = CollectorRegistry()
        directory = multiprocess_dir()
        if directory is not None:
            # prometheus-client leaves this constructor unannotated.
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        else:
            registry.register(_ThisProcess())
        registry.register(self._database)
        return generate_latest(registry)
