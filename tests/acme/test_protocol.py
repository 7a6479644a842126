"""RFC 8555 with an in-process client that signs its own JWS: the whole flow over http-01 and
dns-01, and each refusal with its ACME error type and a fresh nonce."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from app.ca.acme.jws import b64url_encode, key_authorization
from app.clock import FixedClock
from app.db.acme import claim_challenge
from app.services.acme.validation import CLAIM, RETRY_DELAYS
from app.services.container import Services
from tests.acme.conftest import PUBLIC_URL, ZONE, AcmeClient, Http01Answers
from tests.acme.dns_server import FakeDNS
from tests.acme.flow import (
    ACME_ERROR,
    csr_der,
    new_order,
    problem,
    ready_order,
    settle,
    validate,
)
from tests.acme.jose import jws, public_jwk


def test_directory_and_nonces(acme_http: Any) -> None:
    directory = acme_http.get("/acme/directory")
    assert directory.json()["meta"]["externalAccountRequired"] is True, directory.text
    assert directory.json()["newOrder"] == f"{PUBLIC_URL}/acme/new-order"
    head = acme_http.head("/acme/new-nonce")
    get = acme_http.get("/acme/new-nonce")
    assert (head.status_code, get.status_code) == (200, 204)
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    assert head.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("kind", ["http-01", "dns-01"])
def test_an_order_is_validated_finalized_and_downloaded(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    kind: str,
) -> None:
    name = f"app.{ZONE}"
    url, order = new_order(account, name)
    assert order["status"] == "pending"
    validate(account, acme_services, order, kind=kind, http01=http01, dns=test_dns)
    order = account.post(url, None).json()
    assert order["status"] == "ready", order
    done = account.post(order["finalize"], {"csr": csr_der(name)})
    assert done.status_code == 200, done.text
    chain = x509.load_pem_x509_certificates(account.post(done.json()["certificate"], None).content)
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    assert len(chain) == 3, "leaf, issuing CA, root"
    # An ordinary MintCA certificate, audited with the account URL as actor.
    serial = f"{leaf.serial_number:x}"
    assert acme_services.certificates.get(serial).profile == "server"
    entries = acme_services.audit.newest(limit=5)
    issued = next(e for e in entries if e.action == "certificate.issue")
    assert issued.actor == account.kid


def test_a_failed_challenge_makes_the_order_invalid(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, clock: FixedClock
) -> None:
    url, order = new_order(account, f"nothing.{ZONE}")
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    http01.answers[challenge["token"]] = "wrong"
    account.post(challenge["url"], {})
    settle(acme_services, clock)
    failed = account.post(challenge["url"], None).json()
    assert failed["status"] == "invalid", failed
    assert failed["error"]["type"] == ACME_ERROR + "incorrectResponse", failed
    assert account.post(url, None).json()["status"] == "invalid"


def test_a_name_outside_the_credential_is_rejected(account: AcmeClient) -> None:
    identifiers = [{"type": "dns", "value": "app.elsewhere.example"}]
    response = account.post(account.directory["newOrder"], {"identifiers": identifiers})
    problem(response, 400, "rejectedIdentifier")


def test_a_reused_nonce_is_refused_with_a_fresh_one(account: AcmeClient) -> None:
    nonce = account.nonce()
    first = account.post(account.kid or "", None, nonce=nonce)
    assert first.status_code == 200, first.text
    again = account.post(account.kid or "", None, nonce=nonce)
    problem(again, 400, "badNonce")
    fresh = again.headers["Replay-Nonce"]
    assert fresh != nonce
    assert account.post(account.kid or "", None, nonce=fresh).status_code == 200


def test_a_bad_signature_is_refused(account: AcmeClient) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    response = account.post(account.directory["newOrder"], {"identifiers": []}, key=other)
    problem(response, 400, "malformed")


def test_a_csr_unlike_the_order_is_bad_and_the_order_stays_ready(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> None:
    url = ready_order(account, acme_services, http01, test_dns, f"a.{ZONE}")
    finalize = account.post(url, None).json()["finalize"]
    for csr in (csr_der(f"b.{ZONE}"), csr_der(f"a.{ZONE}", f"b.{ZONE}"), "bm90IGEgY3Ny"):
        problem(account.post(finalize, {"csr": csr}), 400, "badCSR")
    assert account.post(url, None).json()["status"] == "ready"


def test_finalize_before_validation_is_order_not_ready(account: AcmeClient) -> None:
    _url, order = new_order(account, f"early.{ZONE}")
    problem(
        account.post(order["finalize"], {"csr": csr_der(f"early.{ZONE}")}), 403, "orderNotReady"
    )


def test_a_deactivated_account_can_order_nothing(account: AcmeClient) -> None:
    done = account.post(account.kid or "", {"status": "deactivated"})
    assert done.json()["status"] == "deactivated", done.text
    identifiers = [{"type": "dns", "value": f"x.{ZONE}"}]
    response = account.post(account.directory["newOrder"], {"identifiers": identifiers})
    problem(response, 401, "unauthorized")


def test_accounts_need_a_binding_and_a_credential_binds_one_account(
    acme_http: Any, credential: tuple[str, str]
) -> None:
    stranger = AcmeClient(acme_http)
    url = stranger.directory["newAccount"]
    problem(
        stranger.post(url, {"termsOfServiceAgreed": True}, use_jwk=True),
        400,
        "externalAccountRequired",
    )
    problem(
        stranger.post(url, {"onlyReturnExisting": True}, use_jwk=True), 400, "accountDoesNotExist"
    )
    assert stranger.register(*credential).status_code == 201
    again = stranger.post(url, {"onlyReturnExisting": True}, use_jwk=True)
    assert (again.status_code, again.headers["Location"]) == (200, stranger.kid), again.text
    problem(AcmeClient(acme_http).register(*credential), 401, "unauthorized")
    problem(
        AcmeClient(acme_http).register(credential[0], b64url_encode(b"x" * 32)), 401, "unauthorized"
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        pytest.param(b"{", "application/jose+json", 400, id="broken json"),
        pytest.param(b"[]", "application/jose+json", 400, id="json list"),
        pytest.param(
            b'{"protected":"!!","payload":"","signature":""}',
            "application/jose+json",
            400,
            id="bad base64url",
        ),
        pytest.param(
            b'{"protected":"e30","payload":"","signature":""}',
            "application/jose+json",
            400,
            id="empty header",
        ),
        pytest.param(b"{}", "application/json", 415, id="wrong media type"),
        pytest.param(b"x" * 70000, "application/jose+json", 413, id="huge body"),
    ],
)
def test_malformed_requests_get_acme_problems(
    acme_http: Any, body: bytes, content_type: str, status: int
) -> None:
    response = acme_http.post(
        "/acme/new-order", content=body, headers={"Content-Type": content_type}
    )
    problem(response, status, "malformed")


def test_key_rollover_retires_the_old_key(account: AcmeClient) -> None:
    url = account.directory["keyChange"]
    old_key, new_key = account.key, ec.generate_private_key(ec.SECP256R1())
    inner = jws(
        new_key,
        {"account": account.kid, "oldKey": public_jwk(old_key)},
        url=url,
        nonce=None,
        kid=None,
    )
    changed = account.post(url, inner)
    assert changed.status_code == 200, changed.text
    refused = account.post(account.kid or "", None)
    problem(refused, 400, "malformed")  # the old key's signature no longer verifies
    account.key = new_key
    assert account.post(account.kid or "", None).status_code == 200
    stranger = AcmeClient(account.http, key=new_key)
    again = stranger.post(
        stranger.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True
    )
    assert again.headers["Location"] == account.kid, again.text


def test_the_account_lists_its_orders_and_orders_for_ips(
    account: AcmeClient, acme_services: Services, http01: Http01Answers
) -> None:
    ip = {"type": "ip", "value": "127.0.0.1"}
    problem(
        account.post(account.directory["newOrder"], {"identifiers": [ip]}),
        400,
        "rejectedIdentifier",
    )
    made = acme_services.acme.accounts.create_credential(
        names=["127.0.0.1"], profile=None, max_validity_days=None, actor="test"
    )
    client = AcmeClient(account.http)
    client.register(made.kid, made.hmac_key)
    created = client.post(client.directory["newOrder"], {"identifiers": [ip]})
    assert created.status_code == 201, created.text
    authz = client.post(created.json()["authorizations"][0], None).json()
    assert {c["type"] for c in authz["challenges"]} == {"http-01", "tls-alpn-01"}, authz
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    http01.answers[challenge["token"]] = key_authorization(
        challenge["token"], public_jwk(client.key)
    )
    client.post(challenge["url"], {})
    acme_services.acme.validator.run_due()
    assert client.post(created.headers["Location"], None).json()["status"] == "ready"
    orders_url = client.post(client.kid or "", None).json()["orders"]
    listed = client.post(orders_url, None)
    assert listed.json() == {"orders": [created.headers["Location"]]}, listed.text
    problem(account.post(orders_url, None), 403, "unauthorized")


def test_a_claim_that_lapses_is_validated_by_another_validator(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, clock: FixedClock
) -> None:
    """A validator that claimed a challenge and died (a crash, a restart) holds it only until
    the claim lapses; then any process's validator finishes it."""
    url, order = new_order(account, f"resume.{ZONE}")
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    http01.answers[challenge["token"]] = key_authorization(
        challenge["token"], public_jwk(account.key)
    )
    account.post(challenge["url"], {})
    challenge_id = challenge["url"].rsplit("/", 1)[-1]
    now = clock.now()
    with acme_services.db.write() as session:
        assert claim_challenge(session, challenge_id, now, now + CLAIM)
    assert acme_services.acme.validator.run_due() == 0, "claimed by the validator that died"
    assert account.post(url, None).json()["status"] == "pending"
    clock.advance(seconds=CLAIM.total_seconds() + 1)
    assert acme_services.acme.validator.run_due() == 1
    assert account.post(url, None).json()["status"] == "ready"


def test_orders_and_authorizations_expire(
    account: AcmeClient, acme_services: Services, clock: FixedClock
) -> None:
    url, order = new_order(account, f"late.{ZONE}")
    clock.advance(days=8)
    assert account.post(url, None).json()["status"] == "invalid"
    authz = account.post(order["authorizations"][0], None).json()
    assert authz["status"] == "expired", authz
    answered = account.post(authz["challenges"][0]["url"], {})
    assert answered.json()["status"] == "pending", "an expired authorization validates nothing"
    assert acme_services.acme.validator.run_due() == 0


@pytest.mark.parametrize(
    ("days", "honoured"),
    [pytest.param(10, True, id="within the profile"), pytest.param(400, False, id="beyond it")],
)
def test_the_orders_not_after_is_honoured_to_the_second(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    clock: FixedClock,
    days: int,
    honoured: bool,
) -> None:
    name = f"until.{ZONE}"
    not_after = (clock.now() + timedelta(days=days, seconds=7)).replace(microsecond=0)
    identifiers = [{"type": "dns", "value": name}]
    payload = {"identifiers": identifiers, "notAfter": not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}
    created = account.post(account.directory["newOrder"], payload)
    if not honoured:
        problem(created, 400, "malformed")
        return
    assert created.status_code == 201, created.text
    order = created.json()
    validate(account, acme_services, order, kind="dns-01", http01=http01, dns=test_dns)
    done = account.post(order["finalize"], {"csr": csr_der(name)}).json()
    leaf = x509.load_pem_x509_certificates(account.post(done["certificate"], None).content)[0]
    assert leaf.not_valid_after_utc == not_after


def test_a_failed_attempt_is_retried_after_a_delay(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, clock: FixedClock
) -> None:
    """RFC 8555 §8.2: the client's web server may lag its answer to the challenge."""
    url, order = new_order(account, f"lagging.{ZONE}")
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    account.post(challenge["url"], {})
    assert acme_services.acme.validator.run_due() == 1  # 404: not served yet
    waiting = account.post(challenge["url"], None).json()
    assert waiting["status"] == "processing", waiting
    assert waiting["error"]["type"].endswith(":unauthorized"), waiting
    assert acme_services.acme.validator.run_due() == 0, "not before the delay"
    http01.answers[challenge["token"]] = key_authorization(
        challenge["token"], public_jwk(account.key)
    )
    clock.advance(seconds=RETRY_DELAYS[0].total_seconds() + 1)
    assert acme_services.acme.validator.run_due() == 1
    done = account.post(challenge["url"], None).json()
    assert (done["status"], done.get("error")) == ("valid", None), done
    assert account.post(url, None).json()["status"] == "ready"
