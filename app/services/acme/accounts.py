"""ACME accounts and the external account binding credentials an admin makes for them."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.ca.acme.jws import (
    b64url_encode,
    load_jwk,
    malformed,
    parse_jws,
    thumbprint,
    verify_eab,
    verify_signature,
)
from app.ca.keys import wrap_secret
from app.ca.names import is_dns_name, is_ip
from app.ca.profiles import get_profile
from app.clock import Clock
from app.db import acme as queries
from app.db.engine import Database
from app.db.models import AcmeAccountRecord, AcmeEabRecord
from app.errors import AcmeProblemError, InvalidRequestError, ProfileViolationError
from app.services import audit
from app.services.acme.requests import Account, AcmeUrls, VerifiedRequest, account_from_record
from app.services.keyring import Keyring

ACME_PROFILES = ("server", "peer")  # ACME proves control of host names: serverAuth profiles
HMAC_KEY_BYTES = 32


@dataclass(frozen=True)
class Credential:
    kid: str
    hmac_key: str  # unpadded base64url, shown once


@dataclass(frozen=True)
class AccountResult:
    account: Account
    created: bool


def check_credential_names(names: list[str]) -> None:
    """Raises: InvalidRequestError: no names, or one that is no DNS name, IP or *.suffix."""
    if not names:
        raise InvalidRequestError("give at least one name")
    for name in names:
        if not (is_ip(name) or is_dns_name(name)):
            raise InvalidRequestError(f"not a DNS name, *.suffix or IP address: {name!r}")


class AcmeAccounts:
    def __init__(
        self, db: Database, clock: Clock, urls: AcmeUrls, *, keyring: Keyring, eab_required: bool
    ) -> None:
        self._db = db
        self._clock = clock
        self._urls = urls
        self._keyring = keyring  # EAB keys are wrapped under the KEK and follow its rotation
        self.eab_required = eab_required

    def create_credential(
        self, *, names: list[str], profile: str | None, max_validity_days: int | None, actor: str
    ) -> Credential:
        """Make an EAB credential (kid and HMAC key); the key is stored wrapped under the KEK.

        Raises:
            InvalidRequestError, ProfileViolationError: bad names, profile or validity.
        """
        check_credential_names(names)
        profile_name = profile or "server"
        if profile_name not in ACME_PROFILES:
            get_profile(profile_name)  # an unknown name gets the list of known ones
            raise ProfileViolationError(f"ACME issues the profiles {', '.join(ACME_PROFILES)}")
        if max_validity_days is not None and max_validity_days < 1:
            raise InvalidRequestError("max_validity_days must be at least 1")
        kid, key = f"eab_{secrets.token_hex(12)}", secrets.token_bytes(HMAC_KEY_BYTES)
        now = self._clock.now()
        with self._db.write() as session:
            session.add(
                AcmeEabRecord(
                    kid=kid,
                    key_wrapped=wrap_secret(key, kek=self._keyring.kek, label=f"acme-eab:{kid}"),
                    names=list(names),
                    profile=profile_name,
                    max_validity_days=max_validity_days,
                    created_at=now,
                    created_by=actor,
                )
            )
            details = {"names": names, "profile": profile_name, "max_days": max_validity_days}
            audit.record(
                session, at=now, actor=actor, action="acme.eab.create", target=kid, details=details
            )
        return Credential(kid, b64url_encode(key))

    def new_account(self, request: VerifiedRequest, url: str) -> AccountResult:
        """RFC 8555 §7.3: find the account of this key, or make one (with EAB when required).

        Raises:
            AcmeProblemError: accountDoesNotExist (onlyReturnExisting), externalAccountRequired,
                unauthorized (a bad or used EAB), malformed.
        """
        payload = request.payload()
        key_id = thumbprint(request.jwk)
        with self._db.read() as session:
            existing = queries.find_account_by_thumbprint(session, key_id)
            if existing is not None:
                return AccountResult(account_from_record(existing, self._urls), created=False)
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblemError("accountDoesNotExist", "no account has this key")
        contact = _contact(payload.get("contact", []))
        binding = payload.get("externalAccountBinding")
        if binding is None and self.eab_required:
            raise AcmeProblemError(
                "externalAccountRequired", "MintCA needs an external account binding (EAB)"
            )
        try:
            return AccountResult(self._create(request, binding, url, key_id, contact), True)
        except IntegrityError:  # the same key registered at the same moment: one row won
            with self._db.read() as session:
                existing = queries.find_account_by_thumbprint(session, key_id)
                if existing is None:
                    raise
                return AccountResult(account_from_record(existing, self._urls), created=False)

    def _create(
        self,
        request: VerifiedRequest,
        binding: object,
        url: str,
        key_id: str,
        contact: list[str],
    ) -> Account:
        account_id = secrets.token_urlsafe(12)
        now = self._clock.now()
        with self._db.write() as session:
            kid = self._check_binding(session, binding, request.jwk, url) if binding else None
            record = AcmeAccountRecord(
                id=account_id,
                thumbprint=key_id,
                jwk=request.jwk,
                status="valid",
                contact=contact,
                eab_kid=kid,
                created_at=now,
            )
            session.add(record)
            session.flush()
            if kid is not None and not queries.bind_credential(session, kid, account_id):
                raise AcmeProblemError("unauthorized", "the EAB credential is used", status=401)
            audit.record(
                session,
                at=now,
                actor=self._urls.account(account_id),
                action="acme.account.create",
                target=self._urls.account(account_id),
                details={"eab_kid": kid, "thumbprint": key_id},
            )
            return account_from_record(record, self._urls)

    def _check_binding(self, session: Any, binding: object, jwk: dict[str, Any], url: str) -> str:
        """RFC 8555 §7.3.4: the inner JWS is a MAC over the account key, for this URL."""
        if not isinstance(binding, dict):
            raise malformed("externalAccountBinding must be a JWS object")
        inner = parse_jws(binding)
        kid = inner.protected.get("kid")
        if inner.protected.get("url") != url or "nonce" in inner.protected:
            raise malformed("the EAB's url must be the newAccount URL, with no nonce")
        record = session.get(AcmeEabRecord, kid) if isinstance(kid, str) else None
        if record is None:
            raise AcmeProblemError("unauthorized", "unknown EAB key identifier", status=401)
        key = self._keyring.unwrap_secret(record.key_wrapped, label=f"acme-eab:{record.kid}")
        verify_eab(inner, key)
        if inner.payload_json() != jwk:
            raise malformed("the EAB payload must be the account's JWK")
        if record.account_id is not None:
            raise AcmeProblemError("unauthorized", "the EAB credential is used", status=401)
        return str(record.kid)

    def update_account(self, request: VerifiedRequest) -> Account:
        """RFC 8555 §7.3.2 and §7.3.6: new contacts, or deactivation (final).

        Raises:
            AcmeProblemError: malformed.
        """
        assert request.account is not None
        if request.is_post_as_get:
            return request.account
        payload = request.payload()
        now = self._clock.now()
        with self._db.write() as session:
            record = session.get(AcmeAccountRecord, request.account.id)
            assert record is not None
            if "contact" in payload:
                record.contact = _contact(payload["contact"])
            status = payload.get("status")
            if status is not None and status != "deactivated":
                raise malformed("an account's status can only become deactivated")
            if status == "deactivated":
                record.status = "deactivated"
                url = self._urls.account(record.id)
                audit.record(
                    session, at=now, actor=url, action="acme.account.deactivate", target=url
                )
            return account_from_record(record, self._urls)

    def change_key(self, request: VerifiedRequest, url: str) -> Account:
        """RFC 8555 §7.3.5 key rollover: the inner JWS, signed by the new key, names the
        account and its old key; afterwards the old key signs nothing.

        Raises:
            AcmeProblemError: malformed, badPublicKey, conflict (409: the new key has an
                account).
        """
        assert request.account is not None
        inner = parse_jws(request.payload())
        new_jwk = inner.protected.get("jwk")
        if inner.protected.get("url") != url or "nonce" in inner.protected:
            raise malformed("the inner JWS needs the keyChange url and no nonce")
        if not isinstance(new_jwk, dict) or "kid" in inner.protected:
            raise malformed("the inner JWS is signed with a jwk (the new key)")
        verify_signature(inner, load_jwk(new_jwk))
        change = inner.payload_json()
        if change.get("account") != request.account.url or change.get("oldKey") != request.jwk:
            raise malformed("the inner payload must name this account and its current key")
        new_thumbprint = thumbprint(new_jwk)
        now = self._clock.now()
        with self._db.write() as session:
            if queries.find_account_by_thumbprint(session, new_thumbprint) is not None:
                raise AcmeProblemError("conflict", "the new key has an account", status=409)
            record = session.get(AcmeAccountRecord, request.account.id)
            assert record is not None
            record.jwk, record.thumbprint = new_jwk, new_thumbprint
            audit.record(
                session,
                at=now,
                actor=request.account.url,
                action="acme.account.key_change",
                target=request.account.url,
                details={"thumbprint": new_thumbprint},
            )
            return account_from_record(record, self._urls)

    def credential_of(self, account: Account) -> tuple[list[str], str, int | None] | None:
        """The names, profile and maximum validity the account's credential allows."""
        if account.eab_kid is None:
            return None
        with self._db.read() as session:
            record = session.get(AcmeEabRecord, account.eab_kid)
            assert record is not None
            return list(record.names), record.profile, record.max_validity_days


def _contact(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise malformed("contact must be a list of URLs")
    if len(value) > 10 or len(json.dumps(value)) > 2048:
        raise malformed("at most 10 short contacts")
    for item in value:
        if not item.startswith("mailto:"):
            raise AcmeProblemError("unsupportedContact", f"only mailto: contacts: {item!r}")
        if not item.isprintable():  # control characters, NUL among them, are no address
            raise AcmeProblemError("invalidContact", f"not an address: {item!r}")
    return list(value)
