"""ACME on /metrics after real flows with the in-process client: accounts, orders and
authorizations by status, challenges validated, failed and waiting by type, certificates
issued through ACME (all read from the database at scrape time), and the per-process counts
of validation attempts and problem documents."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.clock import FixedClock
from app.services.acme.orders import ORDER_LIFETIME
from app.services.container import Services
from tests.acme.conftest import ZONE, AcmeClient, Http01Answers
from tests.acme.dns_server import FakeDNS
from tests.acme.flow import issue, new_order, problem, settle
from tests.api.test_metrics import Samples, scrape, value

ATTEMPTS = "mintca_acme_validation_attempts_total"


def statuses(samples: Samples, name: str) -> dict[str, float]:
    return {
        dict(labels)["status"]: sample
        for (metric, labels), sample in samples.items()
        if metric == name and sample
    }


def ask_dns01(client: AcmeClient, name: str) -> str:
    """An order whose dns-01 challenge is asked for with no TXT record published: it fails."""
    url, order = new_order(client, name)
    authz = client.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
    answered = client.post(challenge["url"], {})
    assert answered.json()["status"] == "processing", answered.text
    return url


def test_an_acme_flow_moves_the_acme_metrics(
    account: AcmeClient,
    acme_services: Services,
    acme_http: TestClient,
    http01: Http01Answers,
    test_dns: FakeDNS,
    clock: FixedClock,
) -> None:
    before = scrape(acme_http)
    issue(account, acme_services, http01, test_dns, f"web.{ZONE}")
    ask_dns01(account, f"nodns.{ZONE}")
    waiting = scrape(acme_http)
    settle(acme_services, clock)
    new_order(account, f"later.{ZONE}")
    made = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    leaving = AcmeClient(account.http)
    assert leaving.register(made.kid, made.hmac_key).status_code == 201
    gone = leaving.post(leaving.kid or "", {"status": "deactivated"})
    assert gone.json()["status"] == "deactivated", gone.text
    after = scrape(acme_http)

    assert value(waiting, "mintca_acme_challenges_processing", type="dns-01") == 1, waiting
    assert statuses(after, "mintca_acme_accounts") == {"valid": 1, "deactivated": 1}
    assert statuses(after, "mintca_acme_orders") == {"valid": 1, "invalid": 1, "pending": 1}
    assert statuses(after, "mintca_acme_authorizations") == {
        "valid": 1,
        "invalid": 1,
        "pending": 1,
    }
    validated = "mintca_acme_challenges_validated_total"
    failed = "mintca_acme_challenges_failed_total"
    assert value(after, validated, type="http-01") == 1, after
    assert value(after, failed, type="dns-01") == 1, after
    assert value(after, validated, type="dns-01") == value(after, failed, type="http-01") == 0
    assert value(after, "mintca_acme_challenges_processing", type="dns-01") == 0
    ca_id = next(dict(k)["ca_id"] for (n, k), v in after.items() if n == "mintca_ca_active" and v)
    issued = "mintca_acme_certificates_issued_total"
    assert value(after, issued, ca_id=ca_id, profile="server") == 1, after
    attempts = {
        (kind, outcome): value(after, ATTEMPTS, type=kind, outcome=outcome)
        - value(before, ATTEMPTS, type=kind, outcome=outcome)
        for kind in ("http-01", "dns-01")
        for outcome in ("valid", "retry", "invalid")
    }
    assert attempts == {
        ("http-01", "valid"): 1,
        ("http-01", "retry"): 0,
        ("http-01", "invalid"): 0,
        ("dns-01", "valid"): 0,
        ("dns-01", "retry"): 2,  # RFC 8555 §8.2: two retries, then invalid
        ("dns-01", "invalid"): 1,
    }, attempts


def test_orders_and_authorizations_that_expire_read_as_clients_see_them(
    account: AcmeClient, acme_http: TestClient, clock: FixedClock
) -> None:
    new_order(account, f"lapsing.{ZONE}")
    clock.advance(seconds=ORDER_LIFETIME.total_seconds() + 1)

    samples = scrape(acme_http)

    assert statuses(samples, "mintca_acme_orders") == {"invalid": 1}, samples
    assert statuses(samples, "mintca_acme_authorizations") == {"expired": 1}, samples


def test_problem_documents_are_counted_by_type(account: AcmeClient, acme_http: TestClient) -> None:
    name = "mintca_acme_problems_total"
    before = scrape(acme_http)
    nonce = account.nonce()
    assert account.post(account.kid or "", None, nonce=nonce).status_code == 200
    problem(account.post(account.kid or "", None, nonce=nonce), 400, "badNonce")
    identifiers = [{"type": "dns", "value": "elsewhere.example"}]
    refused = account.post(account.directory["newOrder"], {"identifiers": identifiers})
    problem(refused, 400, "rejectedIdentifier")
    after = scrape(acme_http)

    moved = {
        kind: value(after, name, type=kind) - value(before, name, type=kind)
        for kind in ("badNonce", "rejectedIdentifier", "malformed")
    }
    assert moved == {"badNonce": 1, "rejectedIdentifier": 1, "malformed": 0}, moved


def test_every_status_has_a_series_before_the_first_event(acme_http: TestClient) -> None:
    """Zero series exist from the start, so alerts on ratios have something to read."""
    samples = scrape(acme_http)

    for name, labels in [
        ("mintca_acme_accounts", {"status": "valid"}),
        ("mintca_acme_orders", {"status": "invalid"}),
        ("mintca_acme_authorizations", {"status": "expired"}),
        ("mintca_acme_challenges_failed_total", {"type": "tls-alpn-01"}),
        ("mintca_acme_challenges_processing", {"type": "http-01"}),
    ]:
        assert (name, frozenset(labels.items())) in samples, (name, sorted(samples))
