"""A tiny ACME client side for tests: keys as JWKs and flattened JWS signed with cryptography."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.ca.acme.jws import b64url_encode

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _b64_int(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: SigningKey) -> dict[str, str]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        return {
            "kty": "EC",
            "crv": {256: "P-256", 384: "P-384"}[key.curve.key_size],
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def alg_of(key: SigningKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256" if key.curve.key_size == 256 else "ES384"
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "EdDSA"


def sign(key: SigningKey, signing_input: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = hashes.SHA256() if key.curve.key_size == 256 else hashes.SHA384()
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(signing_input)


def jws(
    key: SigningKey, payload: dict[str, Any] | None, *, url: str, nonce: str | None, kid: str | None
) -> dict[str, str]:
    """A flattened JWS; `payload=None` is POST-as-GET; `kid=None` puts the JWK in the header."""
    header: dict[str, Any] = {"alg": alg_of(key), "url": url}
    if nonce is not None:
        header["nonce"] = nonce
    if kid is None:
        header["jwk"] = public_jwk(key)
    else:
        header["kid"] = kid
    protected = b64url_encode(json.dumps(header).encode())
    body = b"" if payload is None else json.dumps(payload).encode()
    encoded = b64url_encode(body)
    signature = sign(key, f"{protected}.{encoded}".encode())
    return {"protected": protected, "payload": encoded, "signature": b64url_encode(signature)}


def eab(account_key: SigningKey, *, kid: str, hmac_key: bytes, url: str) -> dict[str, str]:
    """RFC 8555 §7.3.4: the binding's JWS, an HS256 MAC over the account's JWK."""
    protected = b64url_encode(json.dumps({"alg": "HS256", "kid": kid, "url": url}).encode())
    payload = b64url_encode(json.dumps(public_jwk(account_key)).encode())
    mac = hmac.new(hmac_key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": protected, "payload": payload, "signature": b64url_encode(mac)}
