"""The pure JOSE part: strict base64url, JWK loading, RFC 7638 thumbprints, signatures."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from app.ca.acme.jws import (
    b64url_decode,
    key_authorization,
    load_jwk,
    parse_jws,
    thumbprint,
    verify_eab,
    verify_signature,
)
from app.errors import AcmeProblemError
from tests.acme.jose import SigningKey, eab, jws, public_jwk

KEYS: list[SigningKey] = [
    ec.generate_private_key(ec.SECP256R1()),
    ec.generate_private_key(ec.SECP384R1()),
    rsa.generate_private_key(65537, 2048),
    ed25519.Ed25519PrivateKey.generate(),
]
KEY_IDS = ["ES256", "ES384", "RS256", "EdDSA"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", b"", id="ok/empty"),
        pytest.param("YQ", b"a", id="ok/one byte"),
        pytest.param("_-8", b"\xff\xef", id="ok/url alphabet"),
    ],
)
def test_b64url_decodes_unpadded_base64url(text: str, expected: bytes) -> None:
    assert b64url_decode(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("YQ==", id="padding"),
        pytest.param("+/8", id="standard alphabet"),
        pytest.param("Y", id="impossible length"),
        pytest.param("YR", id="non-zero trailing bits"),
        pytest.param("Y Q", id="whitespace"),
        pytest.param(7, id="not a string"),
    ],
)
def test_b64url_refuses_anything_else(text: object) -> None:
    with pytest.raises(AcmeProblemError) as info:
        b64url_decode(text)
    assert info.value.acme_type == "malformed"


def test_rfc7638_thumbprint_of_the_rfc_example() -> None:
    # RFC 7638 §3.1
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQ"
        "R0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTW"
        "hAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_signatures_of_each_algorithm_verify(key: SigningKey) -> None:
    parsed = parse_jws(jws(key, {"a": 1}, url="u", nonce="n", kid=None))
    verify_signature(parsed, load_jwk(parsed.protected["jwk"]))
    assert parsed.payload_json() == {"a": 1}
    assert key_authorization("tok", public_jwk(key)).startswith("tok.")


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_a_signature_by_another_key_is_refused(key: SigningKey) -> None:
    other = jws(key, {"a": 1}, url="u", nonce="n", kid=None)
    forged = jws(key, {"a": 2}, url="u", nonce="n", kid=None)
    forged["signature"] = other["signature"]
    parsed = parse_jws(forged)
    with pytest.raises(AcmeProblemError) as info:
        verify_signature(parsed, load_jwk(parsed.protected["jwk"]))
    assert info.value.acme_type == "malformed"


@pytest.mark.parametrize(
    ("jwk", "acme_type"),
    [
        pytest.param({"kty": "oct", "k": "AA"}, "badPublicKey", id="symmetric"),
        pytest.param(
            public_jwk(rsa.generate_private_key(65537, 1024)), "badPublicKey", id="rsa 1024"
        ),
        pytest.param({**public_jwk(KEYS[0]), "d": "AA"}, "badPublicKey", id="private part"),
        pytest.param(
            {**public_jwk(KEYS[0]), "y": public_jwk(KEYS[1])["y"]},
            "badPublicKey",
            id="not on curve",
        ),
        pytest.param("EC", "malformed", id="not an object"),
    ],
)
def test_bad_keys_are_refused(jwk: object, acme_type: str) -> None:
    with pytest.raises(AcmeProblemError) as info:
        load_jwk(jwk)
    assert info.value.acme_type == acme_type


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not json"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(b'{"protected":"e30","payload":"","signature":"","header":{}}', id="header"),
        pytest.param(b'{"payload":"","signature":""}', id="no protected"),
        pytest.param(b'{"protected":"W10","payload":"","signature":""}', id="protected a list"),
    ],
)
def test_malformed_jws_is_refused(body: bytes) -> None:
    with pytest.raises(AcmeProblemError) as info:
        parse_jws(body)
    assert info.value.acme_type == "malformed"


def test_eab_mac_verifies_and_a_wrong_key_does_not() -> None:
    binding = parse_jws(eab(KEYS[0], kid="k", hmac_key=b"s" * 32, url="u"))
    verify_eab(binding, b"s" * 32)
    with pytest.raises(AcmeProblemError) as info:
        verify_eab(binding, b"t" * 32)
    assert info.value.acme_type == "unauthorized"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 60_000, id="array"),
        pytest.param(b'{"a":' * 20_000, id="object"),
        pytest.param(b'{"protected":' + b"[" * 60_000, id="inside the document"),
    ],
)
def test_json_nested_past_the_parser_stack_is_malformed(body: bytes) -> None:
    """Found by hypothesis (test_fuzz_hypothesis.py): json.loads raises RecursionError, not
    ValueError, for deep nesting, and that was a 500."""
    with pytest.raises(AcmeProblemError) as raised:
        parse_jws(body)
    assert raised.value.acme_type == "malformed", raised.value.detail
