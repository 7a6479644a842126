"""The steps of an ACME flow that the tests share: orders, validation, issuance, and the
assertion that an answer is an ACME problem with a fresh nonce."""

from __future__ import annotations

from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.ca.acme.jws import b64url_encode, dns01_txt_value, key_authorization
from app.clock import FixedClock
from app.services.acme.validation import RETRY_DELAYS
from app.services.container import Services
from tests.acme.conftest import AcmeClient, Http01Answers
from tests.acme.dns_server import FakeDNS
from tests.acme.jose import public_jwk

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
