"""RFC 8555 with an in-process client that signs its own JWS: the whole flow over http-01 and
dns-01, and each refusal with its ACME error type and a fresh nonce."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from app.ca.acme.jws import b64url_encode, dns01_txt_value, key_authorization
from app.ca.acme.renewal_info import format_cert_id
from app.ca.acme.tlsalpn import ACME_IDENTIFIER_OID
from app.clock import FixedClock
from app.db.acme import claim_challenge
from app.services.acme.validation import CLAIM, RETRY_DELAYS
from app.services.container import Services
from tests.acme.conftest import PUBLIC_URL, ZONE, AcmeClient, Http01Answers, TlsAlpnAnswer
from tests.acme.dns_server import FakeDNS
from tests.acme.jose import jws, public_jwk
from tests.services.test_certificate_lint import lint

ACME_ERROR = "urn:ietf:params:acme:error:"


def problem(response: httpx.Response, status: int, acme_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == ACME_ERROR + acme_type, body
    assert response.headers.get("Replay-Nonce"), "every ACME answer carries a fresh nonce"
    return body


def csr_der(*names: str, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return b64url_encode(csr.public_bytes(Encoding.DER))


def new_order(client: AcmeClient, *names: str) -> tuple[str, dict[str, Any]]:
    identifiers = [{"type": "dns", "value": n} for n in names]
    response = client.post(client.directory["newOrder"], {"identifiers": identifiers})
    assert response.status_code == 201, response.text
    return response.headers["Location"], response.json()


def validate(
    client: AcmeClient,
    services: Services,
    order: dict[str, Any],
    *,
    kind: str,
    http01: Http01Answers,
    dns: FakeDNS,
) -> None:
    """Answer `kind` for every authorization, ask for validation, run the validator."""
    for authz_url in order["authorizations"]:
        authz = client.post(authz_url, None).json()
        challenge = next(c for c in authz["challenges"] if c["type"] == kind)
        key_auth = key_authorization(challenge["token"], public_jwk(client.key))
        name = authz["identifier"]["value"]
        http01.answers[challenge["token"]] = key_auth
        dns.txt[f"_acme-challenge.{name}"] = [dns01_txt_value(key_auth)]
        answered = client.post(challenge["url"], {})
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == "processing", answered.text
        assert 'rel="up"' in answered.headers["Link"]
    assert services.acme.validator.run_due() == len(order["authorizations"])


def settle(services: Services, clock: FixedClock) -> None:
    """Run the validator through every retry of a failing challenge (RFC 8555 §8.2)."""
    for _ in range(len(RETRY_DELAYS) + 1):
        services.acme.validator.run_due()
        clock.advance(seconds=30)


def ready_order(
    client: AcmeClient, services: Services, http01: Http01Answers, dns: FakeDNS, *names: str
) -> str:
    url, order = new_order(client, *names)
    validate(client, services, order, kind="http-01", http01=http01, dns=dns)
    ready = client.post(url, None).json()
    assert ready["status"] == "ready", ready
    return url


def issue(
    client: AcmeClient,
    services: Services,
    http01: Http01Answers,
    dns: FakeDNS,
    name: str,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    url = ready_order(client, services, http01, dns, name)
    order = client.post(url, None).json()
    done = client.post(order["finalize"], {"csr": csr_der(name, key=key)})
    assert done.json()["status"] == "valid", done.text
    chain = client.post(done.json()["certificate"], None)
    assert chain.headers["content-type"] == "application/pem-certificate-chain"
    return x509.load_pem_x509_certificates(chain.content)[0]


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


def test_revocation_by_the_ordering_account_only(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    acme_http: Any,
    credential: tuple[str, str],
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"rev.{ZONE}")
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    revoke_url = account.directory["revokeCert"]
    intruder = AcmeClient(acme_http)
    other = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    intruder.register(other.kid, other.hmac_key)
    problem(intruder.post(revoke_url, {"certificate": der}), 403, "unauthorized")
    problem(account.post(revoke_url, {"certificate": der, "reason": 6}), 400, "badRevocationReason")
    done = account.post(revoke_url, {"certificate": der, "reason": 1})
    assert done.status_code == 200, done.text
    info = acme_services.certificates.get(f"{leaf.serial_number:x}")
    assert info.revocation_reason == "keyCompromise"
    problem(account.post(revoke_url, {"certificate": der}), 400, "alreadyRevoked")


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


def alpn_certificate(
    name: str, key_auth: str, *, digest_of: str | None = None
) -> tuple[bytes, bytes]:
    """RFC 8737 §3: self-signed, one SAN, critical acmeIdentifier with SHA-256(key auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256((digest_of or key_auth).encode()).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return certificate.public_bytes(Encoding.PEM), key_pem


@pytest.mark.parametrize(
    ("digest_of", "status"),
    [
        pytest.param(None, "valid", id="right digest"),
        pytest.param("other", "invalid", id="wrong digest"),
    ],
)
def test_tls_alpn01(
    account: AcmeClient,
    acme_services: Services,
    tlsalpn: TlsAlpnAnswer,
    clock: FixedClock,
    digest_of: str | None,
    status: str,
) -> None:
    name = f"alpn.{ZONE}"
    _url, order = new_order(account, name)
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "tls-alpn-01")
    key_auth = key_authorization(challenge["token"], public_jwk(account.key))
    cert_pem, key_pem = alpn_certificate(name, key_auth, digest_of=digest_of)
    tlsalpn.cert_path.write_bytes(cert_pem)
    tlsalpn.key_path.write_bytes(key_pem)
    account.post(challenge["url"], {})
    settle(acme_services, clock)
    result = account.post(challenge["url"], None).json()
    assert result["status"] == status, result


def test_renewal_info_suggests_a_window_and_now_once_revoked(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"ari.{ZONE}")
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    cert_id = format_cert_id(aki.key_identifier, leaf.serial_number)
    url = f"{account.directory['renewalInfo']}/{cert_id}"
    window = account.http.get(account.path(url))
    assert window.status_code == 200, window.text
    start = datetime.fromisoformat(window.json()["suggestedWindow"]["start"])
    assert leaf.not_valid_before_utc < start < leaf.not_valid_after_utc, window.text
    assert window.headers["Retry-After"]
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    account.post(account.directory["revokeCert"], {"certificate": der})
    revoked = account.http.get(account.path(url)).json()["suggestedWindow"]
    assert datetime.fromisoformat(revoked["end"]) < datetime.now(UTC), revoked
    unknown = account.http.get(account.path(f"{account.directory['renewalInfo']}/AAAA.AQ"))
    problem(unknown, 404, "malformed")
    problem(
        account.http.get(account.path(f"{account.directory['renewalInfo']}/x")), 400, "malformed"
    )


def test_pkilint_finds_nothing_in_an_acme_certificate(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    test_dns: FakeDNS,
    tmp_path: Path,
) -> None:
    leaf = issue(account, acme_services, http01, test_dns, f"lint.{ZONE}")
    findings = lint(leaf, tmp_path / "acme.pem")
    assert findings == "", findings


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


def test_revocation_signed_by_the_certificate_key(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(account, acme_services, http01, test_dns, f"own.{ZONE}", key=leaf_key)
    der = b64url_encode(leaf.public_bytes(Encoding.DER))
    url = account.directory["revokeCert"]
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    problem(
        account.post(url, {"certificate": der}, key=stranger_key, use_jwk=True), 403, "unauthorized"
    )
    done = account.post(url, {"certificate": der, "reason": 4}, key=leaf_key, use_jwk=True)
    assert done.status_code == 200, done.text
    info = acme_services.certificates.get(f"{leaf.serial_number:x}")
    assert info.revocation_reason == "superseded"
    revoked = next(
        e for e in acme_services.audit.newest(limit=5) if e.action == "certificate.revoke"
    )
    assert revoked.actor == f"acme:certificate-key:{info.serial}"


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
