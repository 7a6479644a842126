"""The OCSP responder (RFC 6960, RFC 5019 profile): statuses from the database, answers to
nonce-less requests pre-signed and cached until a status they show changes."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.ca.ocsp import (
    CertID,
    CertStatusName,
    MalformedOCSPRequestError,
    OCSPRequestInfo,
    SingleStatus,
    build_ocsp_response,
    build_unsuccessful_response,
    issuer_hashes,
    load_ocsp_request,
)
from app.ca.serials import format_serial
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.certificates import RevocationState
from app.db.engine import Database
from app.services.crls import REASON_BY_NAME
from app.services.keyring import Authority, Keyring
from app.services.responders import ResponderService

log = logging.getLogger(__name__)

HASH_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
CACHE_ENTRIES = 10_000
# What a status snapshot is compared on: a cached answer is reused only while it is true.
Snapshot = tuple[tuple[str, datetime | None, str | None], ...]


@dataclass(frozen=True)
class OCSPAnswer:
    der: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None
    cacheable: bool = False  # true for signed, nonce-less answers (RFC 5019 caching headers)


@dataclass(frozen=True)
class _Cached:
    snapshot: Snapshot
    answer: OCSPAnswer
    refresh_after: datetime


class OCSPService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        responders: ResponderService,
        *,
        validity: timedelta,
        delegated: bool,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._responders = responders
        self._validity = validity
        self._delegated = delegated
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._issuers: dict[tuple[str, bytes, bytes], str] = {}
        self._issuers_of: frozenset[str] = frozenset()

    def respond(self, request_der: bytes) -> OCSPAnswer:
        """Answer any bytes with an OCSP response: never raises."""
        try:
            request = load_ocsp_request(request_der)
        except MalformedOCSPRequestError:
            return OCSPAnswer(build_unsuccessful_response("malformed_request"))
        try:
            return self._respond(request)
        except Exception:
            log.exception("OCSP request failed")
            return OCSPAnswer(build_unsuccessful_response("internal_error"))

    def _respond(self, request: OCSPRequestInfo) -> OCSPAnswer:
        ca_ids = {self._issuer_of(cert_id) for cert_id in request.cert_ids}
        # One response has one signer, so all CertIDs must name the same CA we run.
        if len(ca_ids) != 1 or None in ca_ids:
            return OCSPAnswer(build_unsuccessful_response("unauthorized"))
        authority = self._keyring.get(str(ca_ids.pop()))
        serials = [format_serial(cert_id.serial_number) for cert_id in request.cert_ids]
        with self._db.read() as session:
            states = certificate_queries.revocation_states(session, authority.ca_id, serials)
        snapshot: Snapshot = tuple((s, *states.get(s, (None, "?"))) for s in serials)
        now = self._clock.now()
        key = request.cache_key() if request.nonce is None else None
        if key is not None:
            cached = self._cache.get(key)
            if cached is not None and cached.snapshot == snapshot and now < cached.refresh_after:
                return cached.answer
        answer = self._sign(authority, request, states, now)
        if key is not None:
            with self._lock:
                self._cache[key] = _Cached(snapshot, answer, now + self._validity / 2)
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return answer

    def _sign(
        self,
        authority: Authority,
        request: OCSPRequestInfo,
        states: dict[str, RevocationState],
        now: datetime,
    ) -> OCSPAnswer:
        this_update = now.replace(microsecond=0)
        next_update = this_update + self._validity
        # Issuing CAs live in the `cas` table, not `certificates`: their root vouches for them.
        subordinates = {
            a.certificate.serial_number
            for a in self._keyring.all()
            if a.parent_id == authority.ca_id
        }
        statuses = [
            _status(
                cert_id,
                states.get(format_serial(cert_id.serial_number)),
                this_update,
                next_update,
                subordinate_ca=cert_id.serial_number in subordinates,
            )
            for cert_id in request.cert_ids
        ]
        if self._delegated:
            responder = self._responders.current(authority)
            signer, responder_cert = responder.signer, responder.certificate
            certs = [responder.certificate]
        else:
            signer, responder_cert, certs = authority.signer, authority.certificate, []
        der = build_ocsp_response(
            statuses,
            signer=signer,
            responder_cert=responder_cert,
            produced_at=this_update,
            nonce=request.nonce,
            certs=certs,
        )
        return OCSPAnswer(der, this_update, next_update, cacheable=request.nonce is None)

    def _issuer_of(self, cert_id: CertID) -> str | None:
        known = frozenset(a.ca_id for a in self._keyring.all())
        if known != self._issuers_of:
            self._issuers = {
                (algorithm, *issuer_hashes(a.certificate, algorithm)): a.ca_id
                for a in self._keyring.all()
                if not a.offline  # an offline root answers no OCSP: its CRL says it all
                for algorithm in HASH_ALGORITHMS
            }
            self._issuers_of = known
        return self._issuers.get(
            (cert_id.hash_algorithm, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
        )


def _status(
    cert_id: CertID,
    state: RevocationState | None,
    this_update: datetime,
    next_update: datetime,
    *,
    subordinate_ca: bool = False,
) -> SingleStatus:
    if state is None:
        # RFC 6960 §2.2: a serial of a CA we run that we never issued is "unknown".
        status: CertStatusName = "good" if subordinate_ca else "unknown"
        return SingleStatus(cert_id, status, this_update, next_update)
    revoked_at, reason = state
    if revoked_at is not None:
        return SingleStatus(
            cert_id,
            "revoked",
            this_update,
            next_update,
            revoked_at=revoked_at.replace(microsecond=0),
            revocation_reason=REASON_BY_NAME.get(reason or "unspecified"),
        )
    return SingleStatus(cert_id, "good", this_update, next_update)
