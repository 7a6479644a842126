"""Property-based fuzzing of the JWS endpoints with hypothesis, beyond test_fuzz.py's seeded
requests: raw bodies and malformed JSON, JWS members, base64url, protected headers (alg,
nonce, url, kid/jwk), payloads per resource (signed, so they reach the resource's parsing) and
bodies around the size limit. Every answer is a success or an ACME problem document
(application/problem+json, urn:ietf:params:acme:error:*, a fresh nonce), never a 5xx.

Runs are derandomized (the same examples each run, no example database written);
MINTCA_FUZZ_EXAMPLES=1000 explores more locally."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.api.limits import MAX_BODY_BYTES
from app.ca.acme.jws import b64url_encode
from app.db.models import AcmeAccountRecord
from app.services.container import Services
from tests.acme.conftest import ZONE, AcmeClient, Http01Answers
from tests.acme.dns_server import FakeDNS
from tests.acme.flow import ACME_ERROR, issue, new_order
from tests.acme.jose import SigningKey, alg_of, public_jwk, sign

pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=int(os.environ.get("MINTCA_FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one account for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
JOSE = {"Content-Type": "application/jose+json"}
# Keys that sign with a `jwk` header (newAccount, revokeCert): one of each kind taken.
POOL: list[SigningKey] = [
    ec.generate_private_key(ec.SECP256R1()),
    ec.generate_private_key(ec.SECP384R1()),
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ed25519.Ed25519PrivateKey.generate(),
]
RESOURCES = ("new-account", "new-order", "revoke-cert", "key-change", "account", "orders",
             "order", "finalize", "authz", "chall", "cert")  # fmt: skip
WORDS = ["dns", "ip", "valid", "deactivated", "pending", "mailto:a@b.example", f"x.{ZONE}",
         "*.example", "127.0.0.1", "ES256", "RS256", "HS256", "none", "EdDSA", "EC", "RSA", "OKP",
         "P-256", "Ed25519", "2030-01-01T00:00:00Z", "=", "A", "AAAA"]  # fmt: skip
PAYLOAD_KEYS = ["identifiers", "csr", "certificate", "reason", "contact", "status",
                "onlyReturnExisting", "termsOfServiceAgreed", "externalAccountBinding", "account",
                "oldKey", "notAfter", "notBefore", "type", "value", "protected", "payload",
                "signature", "kty", "crv", "x", "y", "n", "e"]  # fmt: skip
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MISSING = object()  # a header member left out
FRESH, SPENT = object(), object()  # a nonce fetched now, or one already used


@dataclass(frozen=True)
class Targets:
    """URLs of real resources of the fuzzing account, so requests reach each handler."""

    urls: dict[str, str]
    certificate_der: bytes

    def url(self, resource: str) -> str:
        return self.urls[resource]


@pytest.fixture
def targets(
    account: AcmeClient, acme_services: Services, http01: Http01Answers, test_dns: FakeDNS
) -> Targets:
    certificate = issue(account, acme_services, http01, test_dns, f"fuzz.{ZONE}")
    order_url, order = new_order(account, f"fuzz2.{ZONE}")
    authz_url = order["authorizations"][0]
    challenge_url = account.post(authz_url, None).json()["challenges"][0]["url"]
    directory = account.directory
    kid = account.kid or ""
    serial = format(certificate.serial_number, "x")
    base = directory["newNonce"].removesuffix("new-nonce")
    return Targets(
        {
            "new-account": directory["newAccount"],
            "new-order": directory["newOrder"],
            "revoke-cert": directory["revokeCert"],
            "key-change": directory["keyChange"],
            "account": kid,
            "orders": f"{kid}/orders",
            "order": order_url,
            "finalize": order["finalize"],
            "authz": authz_url,
            "chall": challenge_url,
            "cert": f"{base}cert/{serial}",
        },
        certificate.public_bytes(Encoding.DER),
    )


def keep_account_usable(services: Services, account: AcmeClient) -> None:
    """A fuzzed payload may deactivate the account ({"status": "deactivated"} is a valid
    request): turn it back, so the following examples still reach the resources."""
    with services.db.write() as session:
        record = session.get(AcmeAccountRecord, (account.kid or "").rsplit("/", 1)[-1])
        assert record is not None
        record.status = "valid"


def check_acme_answer(response: httpx.Response, sent: object) -> None:
    """A success, or an ACME problem document with a fresh nonce; never a 5xx."""
    context = f"sent {str(sent)[:400]}\nanswer {response.status_code} {response.text[:400]}"
    assert response.status_code < 500, context
    assert response.headers.get("Replay-Nonce"), context
    if response.status_code < 400:
        event(f"{response.status_code}")  # --hypothesis-show-statistics: what was reached
        return
    assert response.headers["content-type"] == "application/problem+json", context
    problem = response.json()
    assert problem["type"].startswith(ACME_ERROR), context
    assert problem["status"] == response.status_code, context
    event(f"{response.status_code} {problem['type'].removeprefix(ACME_ERROR)}")


def post(account: AcmeClient, url: str, body: bytes, headers: dict[str, str] = JOSE) -> Any:
    return account.http.post(account.path(url), content=body, headers=headers)


# --- strategies --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(WORDS),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(PAYLOAD_KEYS) | st.text(max_size=12), children, max_size=5
        )
    ),
    max_leaves=16,
)


def base64ish() -> st.SearchStrategy[str]:
    """Text near base64url: valid, padded, the standard alphabet, and odd characters."""
    data = st.binary(max_size=80)
    return st.one_of(
        data.map(b64url_encode),
        data.map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        data.map(lambda raw: base64.b64encode(raw).decode()),
        st.text(alphabet=_B64_ALPHABET + "=+/ \t\n.\x00é", max_size=90),
    )


def deep_nesting() -> st.SearchStrategy[bytes]:
    """JSON nested past the parser's recursion limit (json.loads raises RecursionError)."""
    return st.builds(
        lambda opener, depth: (opener * depth).encode(),
        st.sampled_from(["[", '{"a":', '{"protected":[']),
        st.integers(min_value=10, max_value=40_000),
    )


malformed_json = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    deep_nesting(),
)


def signed_body(
    key: SigningKey, header: dict[str, Any], payload_b64: str, *, protected: str | None = None
) -> dict[str, Any]:
    encoded = protected if protected is not None else b64url_encode(json.dumps(header).encode())
    signature = b64url_encode(sign(key, f"{encoded}.{payload_b64}".encode()))
    return {"protected": encoded, "payload": payload_b64, "signature": signature}


def good_header(account: AcmeClient, url: str) -> dict[str, Any]:
    return {"alg": alg_of(account.key), "nonce": account.nonce(), "url": url, "kid": account.kid}


# --- properties --------------------------------------------------------------------------------


@FUZZ
@given(
    resource=st.sampled_from(RESOURCES),
    body=malformed_json,
    content_type=st.sampled_from(
        [
            "application/jose+json",
            "application/jose+json",
            "application/jose+json",
            "application/jose+json; charset=utf-8",
            "application/json",
            "text/plain",
            "",
            "application/jose+json, text/plain",
        ]
    ),
)
def test_raw_bodies_and_malformed_json(
    account: AcmeClient, targets: Targets, resource: str, body: bytes, content_type: str
) -> None:
    url = targets.url(resource)
    check_acme_answer(post(account, url, body, {"Content-Type": content_type}), body)


@FUZZ
@given(
    resource=st.sampled_from(RESOURCES),
    replaced=st.dictionaries(
        st.sampled_from(["protected", "payload", "signature", "header", "extra"]),
        st.one_of(base64ish(), json_values),
        max_size=3,
    ),
    dropped=st.sets(st.sampled_from(["protected", "payload", "signature"]), max_size=2),
    payload=st.one_of(st.none(), json_values),
)
def test_jws_members_and_base64url(
    account: AcmeClient,
    acme_services: Services,
    targets: Targets,
    resource: str,
    replaced: dict[str, Any],
    dropped: set[str],
    payload: Any,
) -> None:
    """A correctly signed request whose members are then replaced (by near-base64url text or
    JSON of any type), added or dropped."""
    url = targets.url(resource)
    payload_b64 = "" if payload is None else b64url_encode(json.dumps(payload).encode())
    document = signed_body(account.key, good_header(account, url), payload_b64)
    document.update(replaced)
    for member in dropped:
        document.pop(member, None)
    try:
        check_acme_answer(post(account, url, json.dumps(document).encode()), document)
    finally:
        keep_account_usable(acme_services, account)


def broken_jwks(jwk: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """The signer's JWK with members replaced or added (private `d`, odd coordinates)."""
    members = st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"])
    changes = st.dictionaries(members, base64ish() | json_values, min_size=1, max_size=2)
    return changes.map(lambda change: {**jwk, **change})


def good_or(good: object, bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the good value, so that a request gets past one check to fail at the next."""
    return st.sampled_from([good, good, good, MISSING]) | bad


@st.composite
def protected_headers(
    draw: st.DrawFn, account: AcmeClient, url: str
) -> tuple[SigningKey, dict[str, Any]]:
    """A protected header whose every member is drawn (mostly good, else wrong, of another
    type or missing), signed with the account's key (`kid`) or a pool key (`jwk`)."""
    identity = draw(st.sampled_from(["kid", "kid", "jwk", "jwk", "both", "neither"]))
    signer: SigningKey = account.key if identity == "kid" else draw(st.sampled_from(POOL))
    other = draw(st.sampled_from(POOL))
    wrong_algs = st.sampled_from([alg_of(other), "none", "HS256", "ES512", "PS256"])
    wrong_urls = st.sampled_from([url + "?x=1", url.upper(), url.replace("http:", "https:")])
    choices: dict[str, st.SearchStrategy[Any]] = {
        "alg": good_or(alg_of(signer), wrong_algs | json_values),
        "nonce": good_or(FRESH, st.just(SPENT) | base64ish() | json_values),
        "url": good_or(url, wrong_urls | json_values),
    }
    if identity in ("kid", "both"):
        wrong_kids = st.sampled_from([(account.kid or "") + "x", url, account.kid, account.kid])
        choices["kid"] = good_or(account.kid, wrong_kids | json_values)
    if identity in ("jwk", "both"):
        good_jwk = public_jwk(signer)
        wrong_jwks = st.just(public_jwk(other)) | broken_jwks(good_jwk) | json_values
        choices["jwk"] = good_or(good_jwk, wrong_jwks)
    header: dict[str, Any] = {}
    for name, values in choices.items():
        value = draw(values)
        if value is FRESH or value is SPENT:
            value = _nonce(account, spent=value is SPENT)
        if value is not MISSING:
            header[name] = value
    extras = st.dictionaries(st.sampled_from(["b64", "crit", "typ", "cty"]), json_values)
    header.update(draw(extras | st.just({}) | st.just({})))
    return signer, header


def _nonce(account: AcmeClient, *, spent: bool) -> str:
    nonce = account.nonce()
    if spent:  # used once already: badNonce
        account.post(account.kid or "", None, nonce=nonce)
    return nonce


@FUZZ
@given(data=st.data(), resource=st.sampled_from(RESOURCES), payload=st.none() | json_values)
def test_protected_headers(
    account: AcmeClient,
    acme_services: Services,
    targets: Targets,
    data: st.DataObject,
    resource: str,
    payload: Any,
) -> None:
    url = targets.url(resource)
    signer, header = data.draw(protected_headers(account, url))
    payload_b64 = "" if payload is None else b64url_encode(json.dumps(payload).encode())
    document = signed_body(signer, header, payload_b64)
    try:
        check_acme_answer(post(account, url, json.dumps(document).encode()), header)
    finally:
        keep_account_usable(acme_services, account)


identifiers = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["dns", "ip", "email", "DNS"]) | json_values,
        "value": st.sampled_from(WORDS) | st.text(max_size=30) | json_values,
    }
)


@st.composite
def resource_payloads(draw: st.DrawFn, targets: Targets) -> dict[str, Any]:
    """Payloads shaped like each resource's (its member names, values of any type)."""
    value = st.one_of(
        json_values,
        base64ish(),
        st.just(b64url_encode(targets.certificate_der)),
        st.lists(identifiers, max_size=3),
    )
    return draw(st.dictionaries(st.sampled_from(PAYLOAD_KEYS), value, max_size=4))


@FUZZ
@given(data=st.data(), resource=st.sampled_from(RESOURCES))
def test_payloads_reach_each_resource(
    account: AcmeClient,
    acme_services: Services,
    targets: Targets,
    data: st.DataObject,
    resource: str,
) -> None:
    url = targets.url(resource)
    payload = data.draw(resource_payloads(targets))
    document = signed_body(
        account.key, good_header(account, url), b64url_encode(json.dumps(payload).encode())
    )
    try:
        check_acme_answer(post(account, url, json.dumps(document).encode()), payload)
    finally:
        keep_account_usable(acme_services, account)


@FUZZ
@given(
    resource=st.sampled_from(RESOURCES),
    size=st.integers(min_value=MAX_BODY_BYTES - 2048, max_value=4 * MAX_BODY_BYTES),
    signed=st.booleans(),
    streamed=st.booleans(),
)
def test_bodies_around_the_size_limit(
    account: AcmeClient, targets: Targets, resource: str, size: int, signed: bool, streamed: bool
) -> None:
    """Over MAX_BODY_BYTES, declared (Content-Length) or streamed (chunked): 413, a malformed
    problem; under it, whatever the content earns, but never a 5xx."""
    url = targets.url(resource)
    if signed:  # a real signed request with a huge payload member
        filler = "x" * max(0, size * 3 // 4 - 600)
        payload_b64 = b64url_encode(json.dumps({"contact": [filler]}).encode())
        body = json.dumps(signed_body(account.key, good_header(account, url), payload_b64))
        body_bytes = body.encode()
    else:
        body_bytes = b'{"protected":"' + b"A" * max(0, size - 16) + b'"}'
    content: Any = body_bytes
    if streamed:
        content = iter([body_bytes[i : i + 16384] for i in range(0, len(body_bytes), 16384)])
    response = account.http.post(account.path(url), content=content, headers=JOSE)
    check_acme_answer(response, f"{len(body_bytes)} bytes, streamed={streamed}")
    if len(body_bytes) > MAX_BODY_BYTES:
        assert response.status_code == 413, response.text
        assert response.json()["type"] == ACME_ERROR + "malformed", response.text
