"""Flattened JWS verification (RFC 7515 §7.2.2) for ACME requests, JWK parsing and RFC 7638
thumbprints, strict base64url, and the external account binding's HMAC (RFC 8555 §7.3.4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from app.errors import AcmeProblemError

AccountKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
# alg -> (curve, hash, bytes per coordinate) for ECDSA (RFC 7518 §3.4)
_EC_ALGS: dict[str, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm, int]] = {
    "ES256": (ec.SECP256R1, hashes.SHA256(), 32),
    "ES384": (ec.SECP384R1, hashes.SHA384(), 48),
}
_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_HMAC_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
SIGNATURE_ALGS = ("ES256", "ES384", "RS256", "EdDSA")
MIN_RSA_BITS = 2048


def malformed(detail: str) -> AcmeProblemError:
    return AcmeProblemError("malformed", detail)


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: object, *, what: str = "value") -> bytes:
    """Strict unpadded base64url: no padding, no other alphabet, canonical trailing bits.

    Raises:
        AcmeProblemError: malformed.
    """
    if not isinstance(text, str) or not _B64URL.match(text) or len(text) % 4 == 1:
        raise malformed(f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise malformed(f"{what} is not unpadded base64url") from exc
    if b64url_encode(data) != text:  # non-zero trailing bits: another text for the same bytes
        raise malformed(f"{what} is not canonical base64url")
    return data


def _member(jwk: dict[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise AcmeProblemError("badPublicKey", f"the JWK lacks the member {name!r}")
    return value


def _int(jwk: dict[str, Any], name: str) -> int:
    return int.from_bytes(b64url_decode(_member(jwk, name), what=f"jwk.{name}"), "big")


def load_jwk(jwk: object) -> AccountKey:
    """A public key from a JWK: EC P-256/P-384, RSA ≥ 2048 bits, Ed25519.

    Raises:
        AcmeProblemError: badPublicKey (unsupported or weak) or malformed.
    """
    if not isinstance(jwk, dict):
        raise malformed("jwk must be a JSON object")
    if "d" in jwk or "p" in jwk:
        raise AcmeProblemError("badPublicKey", "the JWK carries private key material")
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            curve = _CURVES.get(_member(jwk, "crv"))
            if curve is None:
                raise AcmeProblemError("badPublicKey", "EC keys must be on P-256 or P-384")
            numbers = ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"), curve)
            return numbers.public_key()
        if kty == "RSA":
            key = rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
            if key.key_size < MIN_RSA_BITS:
                raise AcmeProblemError("badPublicKey", f"RSA keys need {MIN_RSA_BITS} bits")
            return key
        if kty == "OKP" and _member(jwk, "crv") == "Ed25519":
            raw = b64url_decode(_member(jwk, "x"), what="jwk.x")
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise AcmeProblemError("badPublicKey", f"the JWK is not a valid key: {exc}") from exc
    raise AcmeProblemError("badPublicKey", f"unsupported key type {kty!r}")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = required.get(str(jwk.get("kty")))
    if members is None:
        raise AcmeProblemError("badPublicKey", "unsupported key type")
    canonical = json.dumps({m: _member(jwk, m) for m in members}, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def key_authorization(token: str, jwk: dict[str, Any]) -> str:
    """RFC 8555 §8.1: token '.' thumbprint."""
    return f"{token}.{thumbprint(jwk)}"


def dns01_txt_value(key_auth: str) -> str:
    """RFC 8555 §8.4: the TXT record holds base64url(SHA-256(key authorization))."""
    return b64url_encode(hashlib.sha256(key_auth.encode()).digest())


@dataclass(frozen=True)
class FlattenedJWS:
    """A parsed (not yet verified) flattened JWS."""

    protected: dict[str, Any]
    payload: bytes  # b"" for POST-as-GET
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.protected.get("alg"))

    def payload_json(self) -> dict[str, Any]:
        """Raises: AcmeProblemError: malformed (not a JSON object)."""
        return _json_object(self.payload, "payload")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(f"the {what} is not JSON") from exc
    except RecursionError as exc:  # `[[[[…` deeper than the parser's stack fits in 64 KiB
        raise malformed(f"the {what} is nested too deeply") from exc
    if not isinstance(value, dict):
        raise malformed(f"the {what} must be a JSON object")
    return value


def parse_jws(body: bytes | dict[str, Any]) -> FlattenedJWS:
    """Parse the flattened JSON serialization ACME requires (RFC 8555 §6.2).

    Raises:
        AcmeProblemError: malformed.
    """
    document = body if isinstance(body, dict) else _json_object(body, "request body")
    if set(document) - {"protected", "payload", "signature"} or "header" in document:
        raise malformed("only the flattened JWS serialization with a protected header is taken")
    protected_b64, payload_b64 = document.get("protected"), document.get("payload")
    if not isinstance(protected_b64, str) or not isinstance(payload_b64, str):
        raise malformed("the JWS needs protected, payload and signature members")
    protected = _json_object(b64url_decode(protected_b64, what="protected"), "protected header")
    payload = b64url_decode(payload_b64, what="payload")
    signature = b64url_decode(document.get("signature"), what="signature")
    return FlattenedJWS(protected, payload, f"{protected_b64}.{payload_b64}".encode(), signature)


def verify_signature(jws: FlattenedJWS, key: AccountKey) -> None:
    """Check the JWS signature with the account key, for the algorithms ACME clients use.

    Raises:
        AcmeProblemError: badSignatureAlgorithm (an algorithm not taken, or not the key's),
            malformed (the signature does not verify).
    """
    alg = jws.alg
    try:
        if alg in _EC_ALGS and isinstance(key, ec.EllipticCurvePublicKey):
            curve, digest, size = _EC_ALGS[alg]
            if not isinstance(key.curve, curve) or len(jws.signature) != 2 * size:
                raise _bad_alg(alg)
            r = int.from_bytes(jws.signature[:size], "big")
            s = int.from_bytes(jws.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(digest))
        elif alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(jws.signature, jws.signing_input)
        else:
            raise _bad_alg(alg)
    except InvalidSignature as exc:
        raise malformed("the JWS signature does not verify") from exc


def _bad_alg(alg: str) -> AcmeProblemError:
    return AcmeProblemError(
        "badSignatureAlgorithm",
        f"algorithm {alg!r} is not taken for this key; use one of {', '.join(SIGNATURE_ALGS)}",
    )


def verify_eab(jws: FlattenedJWS, hmac_key: bytes) -> None:
    """Check the external account binding's MAC (RFC 8555 §7.3.4).

    Raises:
        AcmeProblemError: unauthorized (a wrong MAC), malformed (an algorithm not taken).
    """
    digest = _HMAC_ALGS.get(jws.alg)
    if digest is None:
        raise malformed(f"EAB algorithm {jws.alg!r} is not taken; use HS256")
    expected = hmac.new(hmac_key, jws.signing_input, digest).digest()
    if not hmac.compare_digest(expected, jws.signature):
        raise AcmeProblemError(
            "unauthorized", "the external account binding does not verify", status=401
        )
