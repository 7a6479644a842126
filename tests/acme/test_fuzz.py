"""Seeded random requests to every JWS endpoint: malformed JSON, JWS members, base64url,
protected headers and payloads (signed with the account's key and a fresh nonce, so they reach
the resource's own parsing). Every answer is an ACME problem document or a success; none is
a 5xx. The seed makes each run the same."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from app.ca.acme.jws import b64url_encode
from tests.acme.conftest import AcmeClient
from tests.acme.jose import alg_of, sign

CASES = 150
ACME_ERROR = "urn:ietf:params:acme:error:"
PATHS = [
    "new-account", "new-order", "revoke-cert", "key-change", "acct/x", "acct/x/orders",
    "order/x", "order/x/finalize", "authz/x", "chall/x", "cert/x",
]  # fmt: skip


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        None, True, 0, -1, 2**70, 1.5, "", "x" * rng.choice([1, 300, 20000]), "AAAA", "=!",
        "mailto:a@b.c", "dns", {"type": "dns", "value": "a.example"},
    ]  # fmt: skip
    if depth < 3:
        choices += [
            [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            {rng.choice(["identifiers", "csr", "certificate", "reason", "contact", "status",
                         "onlyReturnExisting", "externalAccountBinding", "account", "oldKey",
                         "notAfter", "protected", "payload", "signature", "jwk", "kty"]):
             random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))},
        ]  # fmt: skip
    return rng.choice(choices)


def fuzzed_body(rng: random.Random, client: AcmeClient, url: str) -> bytes:
    header: dict[str, Any] = {"alg": alg_of(client.key), "url": url, "nonce": client.nonce()}
    header["kid"] = client.kid
    payload: Any = random_json(rng)
    kind = rng.randrange(4)
    if kind == 1:  # a mutated protected header
        for _ in range(rng.randint(1, 3)):
            header[rng.choice(["alg", "url", "nonce", "kid", "jwk", "b64", "crit"])] = random_json(
                rng
            )
        if rng.random() < 0.3:
            header.pop(rng.choice(list(header)))
    payload_b64 = b64url_encode(json.dumps(payload).encode())
    if kind == 2:  # payload bytes that are not JSON, or not base64url
        payload_b64 = rng.choice(["!!", "YQ==", b64url_encode(b"\xff\xfe"), "A"])
    protected = b64url_encode(json.dumps(header).encode())
    signature = b64url_encode(sign(client.key, f"{protected}.{payload_b64}".encode()))
    document: Any = {"protected": protected, "payload": payload_b64, "signature": signature}
    if kind == 3:  # the outer document itself
        document = rng.choice([random_json(rng), {**document, "signature": random_json(rng)}])
    return json.dumps(document).encode()


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_jws_requests_get_acme_problems_never_5xx(account: AcmeClient, seed: int) -> None:
    rng = random.Random(seed)
    base = account.directory["newNonce"].removesuffix("new-nonce")
    for _ in range(CASES):
        url = base + rng.choice(PATHS)
        body = fuzzed_body(rng, account, url)
        response = account.http.post(
            account.path(url), content=body, headers={"Content-Type": "application/jose+json"}
        )
        assert response.status_code < 500, f"{url} {body[:300]!r}: {response.text}"
        if response.status_code >= 400:
            problem = response.json()
            assert problem["type"].startswith(ACME_ERROR), f"{url}: {response.text}"
            assert response.headers["content-type"] == "application/problem+json"


DEEP = "[" * 30_000  # deeper than json.loads's recursion limit, well within the body limit


@pytest.mark.parametrize("where", ["body", "protected header", "payload"])
def test_json_nested_too_deeply_is_a_malformed_problem(account: AcmeClient, where: str) -> None:
    """Regression (found by test_fuzz_hypothesis.py): RecursionError from json.loads was a 500."""
    url = account.directory["newOrder"]
    header = {"alg": alg_of(account.key), "url": url, "nonce": account.nonce(), "kid": account.kid}
    protected = b64url_encode(json.dumps(header).encode())
    payload = b64url_encode(b"{}")
    if where == "protected header":
        protected = b64url_encode(DEEP.encode())
    if where == "payload":
        payload = b64url_encode(DEEP.encode())
    signature = b64url_encode(sign(account.key, f"{protected}.{payload}".encode()))
    document = {"protected": protected, "payload": payload, "signature": signature}
    body = DEEP.encode() if where == "body" else json.dumps(document).encode()
    response = account.http.post(
        account.path(url), content=body, headers={"Content-Type": "application/jose+json"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert response.json()["type"] == ACME_ERROR + "malformed", response.text
