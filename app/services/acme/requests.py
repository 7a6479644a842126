"""Every ACME POST goes through here: nonce (single use in the database), the JWS and its
protected header (RFC 8555 §6.2-6.4), and the account that signed it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.ca.acme.jws import (
    SIGNATURE_ALGS,
    FlattenedJWS,
    load_jwk,
    malformed,
    parse_jws,
    verify_signature,
)
from app.clock import Clock
from app.db import acme as queries
from app.db.engine import Database
from app.db.models import AcmeAccountRecord, AcmeNonceRecord
from app.errors import AcmeProblemError

NONCE_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class AcmeUrls:
    """Every URL ACME clients see, built from MINTCA_PUBLIC_URL (the `url` header must equal
    the URL the client posted to, RFC 8555 §6.4)."""

    base: str

    def __call__(self, path: str) -> str:
        return f"{self.base}/acme/{path}"

    def account(self, account_id: str) -> str:
        return self(f"acct/{account_id}")

    def account_id(self, url: str) -> str | None:
        prefix = self("acct/")
        return url[len(prefix) :] if url.startswith(prefix) else None


@dataclass(frozen=True)
class Account:
    id: str
    url: str
    status: str
    contact: list[str]
    jwk: dict[str, Any]
    eab_kid: str | None


@dataclass(frozen=True)
class VerifiedRequest:
    """A JWS whose signature, nonce and URL were checked."""

    jws: FlattenedJWS
    jwk: dict[str, Any]
    account: Account | None  # None when the request was signed with a `jwk`

    @property
    def is_post_as_get(self) -> bool:
        return self.jws.payload == b""

    def payload(self) -> dict[str, Any]:
        return self.jws.payload_json()


def account_from_record(record: AcmeAccountRecord, urls: AcmeUrls) -> Account:
    return Account(
        record.id,
        urls.account(record.id),
        record.status,
        list(record.contact),
        dict(record.jwk),
        record.eab_kid,
    )


class AcmeRequests:
    def __init__(self, db: Database, clock: Clock, urls: AcmeUrls) -> None:
        self._db = db
        self._clock = clock
        self.urls = urls

    def new_nonce(self) -> str:
        """Issue a nonce (stored, so any process sharing the database accepts it once)."""
        value = secrets.token_urlsafe(24)
        now = self._clock.now()
        with self._db.write() as session:
            session.add(AcmeNonceRecord(value=value, expires_at=now + NONCE_LIFETIME))
            if secrets.randbelow(100) == 0:  # now and then, drop what expired
                queries.purge_nonces(session, now)
        return value

    def verify(self, body: bytes, url: str, *, key_may_sign: bool = False) -> VerifiedRequest:
        """Check a request's JWS. `key_may_sign`: a `jwk` header is taken (newAccount,
        revokeCert with the certificate's key); elsewhere the signer is a `kid` account.

        Raises:
            AcmeProblemError: malformed, badNonce, badSignatureAlgorithm, badPublicKey,
                accountDoesNotExist, unauthorized (a deactivated account).
        """
        jws = parse_jws(body)
        header = jws.protected
        if not isinstance(header.get("alg"), str):
            raise malformed("the protected header needs an alg")
        if jws.alg not in SIGNATURE_ALGS:
            raise AcmeProblemError(
                "badSignatureAlgorithm",
                f"algorithm {jws.alg!r} is not taken; use one of {', '.join(SIGNATURE_ALGS)}",
            )
        if header.get("url") != url:
            raise AcmeProblemError("unauthorized", f"the JWS url must be {url}", status=401)
        if ("jwk" in header) == ("kid" in header):
            raise malformed("the protected header needs exactly one of jwk and kid")
        account: Account | None = None
        if "jwk" in header:
            if not key_may_sign:
                raise malformed("this resource takes a kid (the account URL), not a jwk")
            jwk = header["jwk"]
            verify_signature(jws, load_jwk(jwk))
        else:
            account = self._signer(header.get("kid"))
            jwk = account.jwk
            verify_signature(jws, load_jwk(jwk))
        self._spend_nonce(header.get("nonce"))
        return VerifiedRequest(jws, dict(jwk), account)

    def _signer(self, kid: object) -> Account:
        account_id = self.urls.account_id(kid) if isinstance(kid, str) else None
        with self._db.read() as session:
            record = session.get(AcmeAccountRecord, account_id) if account_id else None
            account = account_from_record(record, self.urls) if record else None
        if account is None:
            raise AcmeProblemError("accountDoesNotExist", f"no account {kid!r}")
        if account.status != "valid":
            raise AcmeProblemError("unauthorized", f"the account is {account.status}", status=401)
        return account

    def _spend_nonce(self, nonce: object) -> None:
        if not isinstance(nonce, str) or not nonce:
            raise AcmeProblemError("badNonce", "the protected header needs a nonce")
        with self._db.write() as session:
            spent = queries.take_nonce(session, nonce, self._clock.now())
        if not spent:
            raise AcmeProblemError("badNonce", "the nonce is unknown, used or expired")
