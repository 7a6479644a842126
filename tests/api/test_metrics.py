"""GET /metrics in-process: the exposition parses with prometheus-client's own parser, the
database totals move with enrollment and revocation, OCSP answers are counted by status,
and request latency is labelled by route template, never by raw path."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.request_metrics import route_template
from app.clock import FixedClock
from app.db.engine import Database
from app.db.stats import RENEWAL_ACTION
from app.services.audit import record
from app.services.container import Services
from app.services.metrics import MetricsService
from app.services.telemetry import EVENTS, count_ocsp_answer
from tests.api.conftest import CSRTools, TokenFactory

pytestmark = pytest.mark.db

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist yet (a counter never moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def enroll(client: TestClient, token: str, csr_pem: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/certificates",
        json={"csr": csr_pem, **body},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def ocsp_request(issued: dict[str, Any]) -> bytes:
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    issuer = x509.load_pem_x509_certificate(issued["chain"][0].encode())
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def test_every_documented_family_is_exposed(public_client: TestClient) -> None:
    families = {f.name for f in text_string_to_metric_families(public_client.get("/metrics").text)}

    expected = {
        "mintca_database_up",
        "mintca_certificates_issued",
        "mintca_certificates_revoked",
        "mintca_crl_number",
        "mintca_crl_size_bytes",
        "mintca_crl_age_seconds",
        "mintca_crl_next_update_timestamp_seconds",
        "mintca_ca_not_after_timestamp_seconds",
        "mintca_ca_active",
        "mintca_certificate_soonest_expiry_timestamp_seconds",
        "mintca_certificates_expiring",
        "mintca_ocsp_responses",
        "mintca_http_request_duration_seconds",
        "mintca_acme_accounts",
        "mintca_acme_orders",
        "mintca_acme_authorizations",
        "mintca_acme_challenges_validated",
        "mintca_acme_challenges_failed",
        "mintca_acme_challenges_processing",
        "mintca_acme_certificates_issued",
    }
    assert expected <= families, sorted(expected - families)


def test_enrollment_and_revocation_move_the_database_totals(
    public_client: TestClient,
    admin_client: TestClient,
    new_token: TokenFactory,
    csrs: CSRTools,
    clock: FixedClock,
) -> None:
    before = scrape(public_client)
    token = new_token(["*.zone"], max_uses=2)["token"]
    kept = enroll(public_client, token, csrs.pem_for("kept.zone"), validity_days=90)
    issued = enroll(public_client, token, csrs.pem_for("short.zone"), validity_days=10)
    ca_id = admin_client.get(f"/admin/certificates/{issued['serial']}").json()["ca_id"]
    # An OCSP request makes the CA's responder certificate (7 days, replaced by MintCA
    # itself): the expiry metrics leave it out.
    ocsp_post = {"headers": {"Content-Type": "application/ocsp-request"}}
    assert public_client.post("/ocsp", content=ocsp_request(kept), **ocsp_post).status_code == 200
    after_enroll = scrape(public_client)

    revoked = admin_client.post(
        f"/admin/certificates/{issued['serial']}/revoke", json={"reason": "keyCompromise"}
    )
    assert revoked.status_code == 200, revoked.text
    after_revoke = scrape(public_client)

    key = {"ca_id": ca_id, "profile": "peer"}
    issued_total = "mintca_certificates_issued_total"
    assert value(after_enroll, issued_total, **key) == value(before, issued_total, **key) + 2
    assert value(after_revoke, "mintca_certificates_revoked", **key) == 1, after_revoke
    within = {"ca_id": ca_id, "within": "14d"}
    assert value(after_enroll, "mintca_certificates_expiring", **within) == 1
    assert value(after_revoke, "mintca_certificates_expiring", **within) == 0, "revoked: gone"
    soonest = "mintca_certificate_soonest_expiry_timestamp_seconds"
    short_not_after = clock.now() + timedelta(days=10)
    assert abs(value(after_enroll, soonest, ca_id=ca_id) - short_not_after.timestamp()) < 600
    assert value(after_revoke, soonest, ca_id=ca_id) > short_not_after.timestamp(), kept
    number = "mintca_crl_number"
    assert value(after_revoke, number, ca_id=ca_id) > value(after_enroll, number, ca_id=ca_id)
    assert value(after_revoke, "mintca_crl_size_bytes", ca_id=ca_id) > 0
    assert value(after_revoke, "mintca_database_up") == 1


def test_a_renewal_recorded_in_the_audit_log_moves_the_renewed_total(
    services: Services,
    public_client: TestClient,
    admin_client: TestClient,
    new_token: TokenFactory,
    csrs: CSRTools,
    clock: FixedClock,
) -> None:
    """What POST /v1/renew writes (a certificate row and its `certificate.renew` audit row),
    written here directly: the live renewal test joins when the route exists."""
    token = new_token(["*.zone"], max_uses=2)["token"]
    first = enroll(public_client, token, csrs.pem_for("first.zone"))
    successor = enroll(public_client, token, csrs.pem_for("first.zone"))
    ca_id = admin_client.get(f"/admin/certificates/{successor['serial']}").json()["ca_id"]
    before = scrape(public_client)

    with services.db.write() as session:
        record(
            session,
            at=clock.now(),
            actor="test",
            action=RENEWAL_ACTION,
            target=successor["serial"],
            details={"renews": first["serial"]},
        )
    after = scrape(public_client)

    renewed = "mintca_certificates_renewed_total"
    key = {"ca_id": ca_id, "profile": "peer"}
    assert value(after, renewed, **key) == value(before, renewed, **key) + 1, after


def test_ocsp_answers_are_counted_by_status(
    public_client: TestClient,
    admin_client: TestClient,
    new_token: TokenFactory,
    csrs: CSRTools,
) -> None:
    issued = enroll(public_client, new_token(["a.zone"])["token"], csrs.pem_for("a.zone"))
    request_der = ocsp_request(issued)
    name = "mintca_ocsp_responses_total"
    before = scrape(public_client)

    post = {"headers": {"Content-Type": "application/ocsp-request"}}
    assert public_client.post("/ocsp", content=request_der, **post).status_code == 200
    encoded = base64.b64encode(request_der).decode()
    assert public_client.get(f"/ocsp/{encoded}").status_code == 200
    assert public_client.post("/ocsp", content=b"not DER", **post).status_code == 200
    admin_client.post(
        f"/admin/certificates/{issued['serial']}/revoke", json={"reason": "superseded"}
    )
    assert public_client.post("/ocsp", content=request_der, **post).status_code == 200
    after = scrape(public_client)

    moved = {
        status: value(after, name, status=status) - value(before, name, status=status)
        for status in ("good", "revoked", "malformed_request")
    }
    assert moved == {"good": 2, "revoked": 1, "malformed_request": 1}, moved


def test_latency_is_labelled_by_route_template(public_client: TestClient) -> None:
    cas = scrape(public_client)
    ca_id = next(dict(labels)["ca_id"] for name, labels in cas if name == "mintca_crl_number")
    assert public_client.get(f"/crl/{ca_id}.crl").status_code == 200
    assert public_client.get("/scan/for/admin.php").status_code == 404
    samples = scrape(public_client)

    count = "mintca_http_request_duration_seconds_count"
    crl = {"listener": "public", "method": "GET", "route": "/crl/{ca_id}.crl", "status": "200"}
    assert value(samples, count, **crl) >= 1, sorted(k for k in samples if k[0] == count)
    unmatched = {"listener": "public", "method": "GET", "route": "unmatched", "status": "404"}
    assert value(samples, count, **unmatched) >= 1
    routes = {dict(labels).get("route") for name, labels in samples if name == count}
    assert not any(r and ("admin.php" in r or ca_id in r) for r in routes), routes


class _Route:
    path = "/crl/{ca_id}.crl"


@pytest.mark.parametrize(
    ("scope", "template"),
    [
        pytest.param({"route": _Route(), "path": "/crl/ab12.crl"}, "/crl/{ca_id}.crl", id="routed"),
        # An OCSP fast path in front of FastAPI answers before routing: no route in the scope.
        pytest.param({"path": "/ocsp"}, "/ocsp", id="ocsp POST before routing"),
        pytest.param(
            {"path": "/ocsp/MEUw%2BQ"}, "/ocsp/{encoded:path}", id="ocsp GET before routing"
        ),
        pytest.param({"path": "/ocspx"}, "unmatched", id="not ocsp"),
        pytest.param({"path": "/wp-login.php"}, "unmatched", id="scan"),
    ],
)
def test_route_template_never_uses_the_raw_path(scope: dict[str, Any], template: str) -> None:
    assert route_template(scope) == template


def test_the_mtls_listener_times_its_requests_too(
    admin_client: TestClient, public_client: TestClient
) -> None:
    assert admin_client.get("/admin/cas").status_code == 200
    samples = scrape(public_client)

    labels = {"listener": "mtls", "method": "GET", "route": "/admin/cas", "status": "200"}
    assert value(samples, "mintca_http_request_duration_seconds_count", **labels) >= 1


def test_a_database_outage_still_answers_and_says_so(tmp_path: Path, clock: FixedClock) -> None:
    unreachable = Database(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    text = MetricsService(unreachable, clock).exposition().decode()

    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["mintca_database_up"] == 0, text
    assert "mintca_certificates_issued_total" not in samples, text


def test_ocsp_answers_carry_their_certificate_statuses(
    services: Services,
    public_client: TestClient,
    admin_client: TestClient,
    new_token: TokenFactory,
    csrs: CSRTools,
) -> None:
    issued = enroll(public_client, new_token(["b.zone"])["token"], csrs.pem_for("b.zone"))
    known = ocsp_request(issued)
    probe = ocsp.load_der_ocsp_request(known)
    never_issued = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            probe.issuer_name_hash, probe.issuer_key_hash, 0x5EED, hashes.SHA1()
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )

    assert services.ocsp.respond(known).statuses == ("good",)
    assert services.ocsp.respond(never_issued).statuses == ("unknown",)
    assert services.ocsp.respond(b"not DER").statuses == ("malformed_request",)
    admin_client.post(
        f"/admin/certificates/{issued['serial']}/revoke", json={"reason": "superseded"}
    )
    assert services.ocsp.respond(known).statuses == ("revoked",)


@pytest.mark.parametrize(
    ("statuses", "counted"),
    [
        pytest.param(("good",), "good", id="good"),
        pytest.param(("good", "unknown"), "unknown", id="good and unknown: unknown"),
        pytest.param(("unknown", "revoked", "good"), "revoked", id="any revoked: revoked"),
        pytest.param(("malformed_request",), "malformed_request", id="malformedRequest"),
        pytest.param(("unauthorized",), "unauthorized", id="unauthorized"),
    ],
)
def test_an_answer_counts_once_under_its_gravest_status(
    statuses: tuple[str, ...], counted: str
) -> None:
    def total(status: str) -> float:
        return EVENTS.get_sample_value("mintca_ocsp_responses_total", {"status": status}) or 0.0

    before = {s: total(s) for s in set(statuses) | {counted}}
    count_ocsp_answer(statuses)
    moved = {s: total(s) - before[s] for s in before}
    assert moved == {s: (1 if s == counted else 0) for s in before}, moved
