"""Account edge cases (EAB bindings, contacts, key rollover conflicts) and http-01's limits
(redirects only on the same host and port, a small answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from app.ca.acme.jws import b64url_decode, key_authorization
from app.clock import FixedClock
from app.services.container import Services
from tests.acme.conftest import ZONE, AcmeClient, Http01Answers
from tests.acme.flow import new_order, problem, settle
from tests.acme.jose import eab, jws, public_jwk

Binding = dict[str, Any]


def _other_key_payload(binding: Binding, client: AcmeClient, kid: str, key: bytes) -> Binding:
    return eab(
        ec.generate_private_key(ec.SECP256R1()),
        kid=kid,
        hmac_key=key,
        url=client.directory["newAccount"],
    )


@pytest.mark.parametrize(
    ("mutate", "status", "acme_type"),
    [
        pytest.param(
            lambda b, c, k, h: eab(c.key, kid=k, hmac_key=h, url="http://elsewhere/new-account"),
            400,
            "malformed",
            id="wrong url",
        ),
        pytest.param(_other_key_payload, 400, "malformed", id="binds another key"),
        pytest.param(
            lambda b, c, k, h: eab(
                c.key, kid="eab_unknown", hmac_key=h, url=c.directory["newAccount"]
            ),
            401,
            "unauthorized",
            id="unknown kid",
        ),
        pytest.param(lambda b, c, k, h: "a string", 400, "malformed", id="not a JWS"),
        pytest.param(
            lambda b, c, k, h: {**b, "signature": "AAAA"}, 401, "unauthorized", id="bad mac"
        ),
    ],
)
def test_bad_bindings_are_refused(
    acme_http: TestClient,
    credential: tuple[str, str],
    mutate: Callable[[Binding, AcmeClient, str, bytes], Any],
    status: int,
    acme_type: str,
) -> None:
    client = AcmeClient(acme_http)
    kid, hmac_key = credential[0], b64url_decode(credential[1])
    url = client.directory["newAccount"]
    binding = mutate(eab(client.key, kid=kid, hmac_key=hmac_key, url=url), client, kid, hmac_key)
    payload = {"termsOfServiceAgreed": True, "externalAccountBinding": binding}
    problem(client.post(url, payload, use_jwk=True), status, acme_type)
    assert client.register(*credential).status_code == 201, "a refusal binds nothing"


def test_contacts_are_mailto_only(account: AcmeClient) -> None:
    problem(account.post(account.kid or "", {"contact": ["tel:+1"]}), 400, "unsupportedContact")
    problem(account.post(account.kid or "", {"contact": "mailto:a@b.c"}), 400, "malformed")
    nul = {"contact": ["mailto:a\x00@b.c"]}  # PostgreSQL stores no U+0000
    problem(account.post(account.kid or "", nul), 400, "invalidContact")
    problem(account.post(account.kid or "", {"status": "valid"}), 400, "malformed")
    updated = account.post(account.kid or "", {"contact": ["mailto:ops@example.internal"]})
    assert updated.json()["contact"] == ["mailto:ops@example.internal"], updated.text


def test_key_rollover_to_a_key_with_an_account_is_a_conflict(
    account: AcmeClient, acme_services: Services
) -> None:
    other = AcmeClient(account.http)
    made = acme_services.acme.accounts.create_credential(
        names=[f"*.{ZONE}"], profile=None, max_validity_days=None, actor="test"
    )
    other.register(made.kid, made.hmac_key)
    url = account.directory["keyChange"]
    inner = jws(
        other.key,
        {"account": account.kid, "oldKey": public_jwk(account.key)},
        url=url,
        nonce=None,
        kid=None,
    )
    problem(account.post(url, inner), 409, "conflict")
    wrong_old = jws(
        ec.generate_private_key(ec.SECP256R1()),
        {"account": account.kid, "oldKey": public_jwk(other.key)},
        url=url,
        nonce=None,
        kid=None,
    )
    problem(account.post(url, wrong_old), 400, "malformed")


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        pytest.param(
            "REDIRECT /.well-known/acme-challenge/{token}.2", "valid", None, id="same host redirect"
        ),
        pytest.param("REDIRECT http://evil.example/x", "invalid", "connection", id="another host"),
        pytest.param("REDIRECT https://{name}/x", "invalid", "connection", id="https"),
        pytest.param("x" * 20000, "invalid", "unauthorized", id="too big"),
    ],
)
def test_http01_redirects_and_size(
    account: AcmeClient,
    acme_services: Services,
    http01: Http01Answers,
    clock: FixedClock,
    answer: str,
    status: str,
    error: str | None,
) -> None:
    name = f"redirect.{ZONE}"
    _url, order = new_order(account, name)
    authz = account.post(order["authorizations"][0], None).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    token = challenge["token"]
    http01.answers[token] = answer.format(token=token, name=name)
    http01.answers[f"{token}.2"] = key_authorization(token, public_jwk(account.key))
    account.post(challenge["url"], {})
    settle(acme_services, clock)
    result = account.post(challenge["url"], None).json()
    assert result["status"] == status, result
    if error is not None:
        assert result["error"]["type"].endswith(f":{error}"), result
