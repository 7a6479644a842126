"""ACME orders: newOrder within the account's credential, authorizations and challenges,
finalize through MintCA's ordinary signing and storage, certificate download, revokeCert."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.ca.acme.identifiers import (
    Identifier,
    identifiers_of_csr,
    parse_identifiers,
)
from app.ca.acme.jws import b64url_decode, malformed
from app.ca.csr import check_csr, load_csr
from app.ca.issuance import Endpoints
from app.ca.names import name_allowed, read_requested_names
from app.ca.profiles import check_csr_requests, check_names_fit_profile, get_profile
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import acme as queries
from app.db.engine import Database
from app.db.models import AcmeAuthorizationRecord, AcmeChallengeRecord, AcmeOrderRecord
from app.errors import AcmeProblemError, MintCAError
from app.services.acme.accounts import AcmeAccounts
from app.services.acme.order_list import ORDERS_PAGE_SIZE, OrderPage, order_page
from app.services.acme.requests import Account, AcmeUrls, VerifiedRequest
from app.services.certificates import sign_leaf, store_certificate
from app.services.keyring import Keyring

ORDER_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class Challenge:
    id: str
    type: str
    token: str
    status: str
    validated_at: datetime | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Authorization:
    id: str
    identifier: Identifier
    status: str
    expires_at: datetime
    challenges: list[Challenge]


@dataclass(frozen=True)
class Order:
    id: str
    status: str
    identifiers: list[Identifier]
    not_after: datetime | None
    expires_at: datetime
    authorization_ids: list[str]
    error: dict[str, Any] | None
    certificate_serial: str | None


def _new_id() -> str:
    return secrets.token_urlsafe(12)


def _challenge_types(identifier: Identifier) -> tuple[str, ...]:
    if identifier.type == "ip":
        return ("http-01", "tls-alpn-01")  # RFC 8738 §7: no dns-01 for IP addresses
    if identifier.wildcard:
        return ("dns-01",)  # RFC 8555 §7.1.3
    return ("http-01", "dns-01", "tls-alpn-01")


class AcmeOrders:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        urls: AcmeUrls,
        *,
        accounts: AcmeAccounts,
        keyring: Keyring,
        endpoints: Endpoints,
    ) -> None:
        self._db = db
        self._clock = clock
        self._urls = urls
        self._accounts = accounts
        self._keyring = keyring
        self._endpoints = endpoints
        self.page_size = ORDERS_PAGE_SIZE  # of the orders list; tests make it small

    def new_order(self, request: VerifiedRequest) -> Order:
        """RFC 8555 §7.4: an order with one authorization per identifier.

        Raises:
            AcmeProblemError: rejectedIdentifier (outside the credential), malformed.
        """
        account = signer_of(request)
        payload = request.payload()
        identifiers = parse_identifiers(payload.get("identifiers"))
        credential = self._accounts.credential_of(account)
        if credential is not None:
            for identifier in identifiers:
                if not name_allowed(identifier.value, credential[0]):
                    raise AcmeProblemError(
                        "rejectedIdentifier",
                        f"the account's credential does not allow {identifier.value!r}",
                    )
        now = self._clock.now()
        not_after = self._requested_not_after(payload.get("notAfter"), credential, now)
        order = AcmeOrderRecord(
            id=_new_id(),
            account_id=account.id,
            status="pending",
            identifiers=[i.as_json() for i in identifiers],
            not_after=not_after,
            expires_at=now + ORDER_LIFETIME,
            error=None,
            certificate_serial=None,
            created_at=now,
        )
        with self._db.write() as session:
            session.add(order)
            session.flush()
            for identifier in identifiers:
                authz = AcmeAuthorizationRecord(
                    id=_new_id(),
                    order_id=order.id,
                    identifier_type=identifier.type,
                    identifier_value=identifier.base_name,
                    wildcard=identifier.wildcard,
                    status="pending",
                    expires_at=order.expires_at,
                )
                session.add(authz)
                session.flush()
                for kind in _challenge_types(identifier):
                    session.add(
                        AcmeChallengeRecord(
                            id=_new_id(),
                            authorization_id=authz.id,
                            type=kind,
                            token=secrets.token_urlsafe(32),
                            status="pending",
                        )
                    )
            session.flush()
            return self._order_view(session, order, now)

    def _requested_not_after(
        self,
        value: object,
        credential: tuple[list[str], str, int | None] | None,
        now: datetime,
    ) -> datetime | None:
        """An order's notAfter, honoured to the second within the profile and credential."""
        if value is None:
            return None
        try:
            not_after = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise malformed("notAfter must be an RFC 3339 date-time") from exc
        if not_after.tzinfo is None:
            raise malformed("notAfter needs a time zone")
        limit = self._validity_limit(credential)
        if not_after <= now or not_after - now > limit:
            raise malformed(f"notAfter must lie within {limit.days} days from now")
        return not_after

    def _validity_limit(self, credential: tuple[list[str], str, int | None] | None) -> timedelta:
        profile = get_profile(credential[1] if credential else "server")
        limit = profile.max_validity
        if credential is not None and credential[2] is not None:
            limit = min(limit, timedelta(days=credential[2]))
        return limit

    def order_page(self, request: VerifiedRequest, cursor: str | None) -> OrderPage:
        """RFC 8555 §7.1.2.1: a page of the signer's orders, newest first.

        Raises:
            AcmeProblemError: malformed (not POST-as-GET, or a bad cursor).
        """
        account = signer_of(request)
        return order_page(self._db, request, account.id, cursor, page_size=self.page_size)

    def get_order(self, request: VerifiedRequest, order_id: str) -> Order:
        """Raises: AcmeProblemError: malformed (404) or unauthorized (another account's)."""
        with self._db.read() as session:
            order = self._owned_order(session, order_id, signer_of(request))
            return self._order_view(session, order, self._clock.now())

    def get_authorization(self, request: VerifiedRequest, authz_id: str) -> Authorization:
        with self._db.read() as session:
            authz = session.get(AcmeAuthorizationRecord, authz_id)
            if authz is None:
                raise not_found("authorization")
            self._owned_order(session, authz.order_id, signer_of(request))
            return _authorization_view(session, authz, self._clock.now())

    def respond_challenge(self, request: VerifiedRequest, challenge_id: str) -> Challenge:
        """RFC 8555 §7.5.1: a POST with `{}` asks for validation; the background validator
        does it. POST-as-GET only reads."""
        with self._db.write() as session:
            challenge = session.get(AcmeChallengeRecord, challenge_id)
            if challenge is None:
                raise not_found("challenge")
            authz = session.get(AcmeAuthorizationRecord, challenge.authorization_id)
            assert authz is not None
            self._owned_order(session, authz.order_id, signer_of(request))
            now = self._clock.now()
            if (
                not request.is_post_as_get
                and challenge.status == "pending"
                and authz.status == "pending"
                and authz.expires_at > now
            ):
                challenge.status = "processing"
            return _challenge_view(challenge)

    def authorization_id_of(self, challenge_id: str) -> str:
        with self._db.read() as session:
            challenge = session.get(AcmeChallengeRecord, challenge_id)
            if challenge is None:
                raise not_found("challenge")
            return challenge.authorization_id

    def finalize(self, request: VerifiedRequest, order_id: str) -> Order:
        """RFC 8555 §7.4: issue for a CSR whose names equal the order's, through the same
        signing and storage as enrollment; the account URL is the audit actor.

        Raises:
            AcmeProblemError: orderNotReady, badCSR (the order stays ready), malformed.
        """
        account = signer_of(request)
        now = self._clock.now()
        with self._db.read() as session:
            order = self._owned_order(session, order_id, account)
            view = self._order_view(session, order, now)
        if view.status != "ready":
            raise AcmeProblemError("orderNotReady", f"the order is {view.status}", status=403)
        csr_der = b64url_decode(request.payload().get("csr"), what="csr")
        credential = self._accounts.credential_of(account)
        profile = get_profile(credential[1] if credential else "server")
        try:
            csr = load_csr(csr_der)
            public_key = check_csr(csr)
            check_csr_requests(csr, profile)
            names = read_requested_names(csr)
            check_names_fit_profile(names, profile)
        except AcmeProblemError:
            raise
        except MintCAError as exc:
            raise AcmeProblemError("badCSR", exc.detail) from exc
        if identifiers_of_csr(names) != set(view.identifiers):
            raise AcmeProblemError("badCSR", "the CSR's names must equal the order's identifiers")
        limit = self._validity_limit(credential)
        validity = min(profile.default_validity, limit)
        if view.not_after is not None:
            validity = view.not_after - now
        authority = self._keyring.active_issuer()
        certificate = sign_leaf(
            authority,
            public_key=public_key,
            names=names,
            profile=profile,
            validity=validity,
            now=now,
            endpoints=self._endpoints,
        )
        serial = format_serial(certificate.serial_number)
        with self._db.write() as session:
            record = session.get(AcmeOrderRecord, order_id, with_for_update=True)
            assert record is not None
            if record.status != "ready":  # another request finalized it meanwhile
                raise AcmeProblemError("orderNotReady", f"the order is {record.status}", status=403)
            store_certificate(
                session,
                certificate,
                ca_id=authority.ca_id,
                profile=profile.name,
                names=names,
                token_id=None,
                now=now,
                actor=account.url,
                details={"acme_order": order_id},
            )
            record.status, record.certificate_serial = "valid", serial
            session.flush()
            return self._order_view(session, record, now)

    def _owned_order(self, session: Any, order_id: str, account: Account) -> AcmeOrderRecord:
        order = session.get(AcmeOrderRecord, order_id)
        if order is None:
            raise not_found("order")
        if order.account_id != account.id:
            raise AcmeProblemError("unauthorized", "another account's order", status=403)
        return order  # type: ignore[no-any-return]  # session is the caller's Session

    def _order_view(self, session: Any, order: AcmeOrderRecord, now: datetime) -> Order:
        authzs = queries.authorizations_of(session, order.id)
        status = order.status
        if status in ("pending", "ready") and order.expires_at <= now:
            status = "invalid"  # RFC 8555 §7.1.6: an expired order is invalid
        return Order(
            id=order.id,
            status=status,
            identifiers=[Identifier(i["type"], i["value"]) for i in order.identifiers],
            not_after=order.not_after,
            expires_at=order.expires_at,
            authorization_ids=[a.id for a in authzs],
            error=order.error,
            certificate_serial=order.certificate_serial,
        )


def signer_of(request: VerifiedRequest) -> Account:
    if request.account is None:
        raise malformed("sign this request with the account's kid")
    return request.account


def not_found(what: str) -> AcmeProblemError:
    return AcmeProblemError("malformed", f"no such {what}", status=404)


def _challenge_view(record: AcmeChallengeRecord) -> Challenge:
    return Challenge(
        record.id, record.type, record.token, record.status, record.validated_at, record.error
    )


def _authorization_view(
    session: Any, authz: AcmeAuthorizationRecord, now: datetime
) -> Authorization:
    status = authz.status
    if status == "pending" and authz.expires_at <= now:
        status = "expired"
    value = f"*.{authz.identifier_value}" if authz.wildcard else authz.identifier_value
    return Authorization(
        authz.id,
        Identifier(authz.identifier_type, value),
        status,
        authz.expires_at,
        [_challenge_view(c) for c in queries.challenges_of(session, authz.id)],
    )
