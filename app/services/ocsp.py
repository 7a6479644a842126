"""The OCSP responder (RFC 6960, RFC 5019 profile): statuses from the database, answers to
nonce-less requests pre-signed and cached by the request's DER until any certificate status
changes (the status generation, app.services.status_signal) or half their validity passes."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.ca.ocsp import (
    CertID,
    CertStatusName,
    MalformedOCSPRequestError,
    OCSPRequestInfo,
    SingleStatus,
    UnsuccessfulStatus,
    build_ocsp_response,
    build_unsuccessful_response,
    issuer_hashes,
    load_ocsp_request,
)
from app.ca.ocsp_template import ResponseTemplate, split_nonce_request
from app.ca.serials import format_serial
from app.ca.signer import Signer
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db.certificates import RevocationState
from app.db.engine import Database
from app.services.crls import REASON_BY_NAME
from app.services.keyring import Authority, Keyring
from app.services.responders import ResponderService
from app.services.status_signal import StatusSignal
from app.services.telemetry import count_ocsp_answer

log = logging.getLogger(__name__)

HASH_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
# Bound on the cache per worker (issue 12): an entry of one CertID (key, answer, the parts a
# nonce answer reuses) is about 2.5 KB, so this holds some 6,000; the oldest goes first.
CACHE_MAX_BYTES = 16 * 1024 * 1024
_ENTRY_OVERHEAD_BYTES = 512  # the entry's objects and dict slot, roughly


@dataclass(frozen=True)
class OCSPAnswer:
    der: bytes
    this_update: datetime | None = None
    next_update: datetime | None = None
    cacheable: bool = False  # true for signed, nonce-less answers (RFC 5019 caching headers)
    # What the answer says, for metrics: a status per CertID, or the unsuccessful status.
    statuses: tuple[str, ...] = ()


# The unsuccessful statuses MintCA sends (RFC 6960 §4.2.1), as metric labels.
_UNSUCCESSFUL_NAMES: dict[UnsuccessfulStatus, str] = {
    "malformed_request": "malformed_request",
    "internal_error": "internal_error",
    "unauthorized": "unauthorized",
}


def _unsuccessful(status: UnsuccessfulStatus) -> OCSPAnswer:
    return OCSPAnswer(build_unsuccessful_response(status), statuses=(_UNSUCCESSFUL_NAMES[status],))


@dataclass(frozen=True)
class _Cached:
    answer: OCSPAnswer
    refresh_after: datetime
    template: ResponseTemplate | None
    size: int


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
        signal: StatusSignal | None = None,
        cache_max_bytes: int = CACHE_MAX_BYTES,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._responders = responders
        self._validity = validity
        self._delegated = delegated
        self._signal = signal or StatusSignal(None)
        self._cache_max_bytes = cache_max_bytes
        self._lock = threading.Lock()
        self._cache: dict[bytes, _Cached] = {}
        self._cache_bytes = 0
        self._generation = self._signal.value()
        self._issuers: dict[tuple[str, bytes, bytes], str] = {}
        self._issuers_of: frozenset[str] = frozenset()

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def answer_cached(self, request_der: bytes) -> OCSPAnswer | None:
        """The fast path: the pre-signed answer to these exact request bytes, or for a request
        that only adds a nonce to them, that answer signed afresh with the nonce; no ASN.1
        parsing, no database. None when the full path (`respond`) must answer."""
        generation = self._signal.value()
        if generation != self._generation:
            self._flush(generation)
            return None
        now = self._clock.now()  # one reading for both lookups and producedAt
        entry = self._cache.get(request_der)
        if entry is not None and now < entry.refresh_after:
            answer = entry.answer
        else:
            twin = split_nonce_request(request_der)
            if twin is None:
                return None
            entry = self._cache.get(twin[0])
            if entry is None or now >= entry.refresh_after or entry.template is None:
                return None
            answer = self._with_nonce(entry, twin[1], now)
        count_ocsp_answer(answer.statuses)  # /metrics, on the fast path too
        return answer

    def respond(self, request_der: bytes) -> OCSPAnswer:
        """Answer any bytes with an OCSP response: never raises."""
        answer = self._respond_any(request_der)
        count_ocsp_answer(answer.statuses)  # /metrics, on the fast path too
        return answer

    def _respond_any(self, request_der: bytes) -> OCSPAnswer:
        generation = self._signal.value()  # before the database read: see _store
        cached = self._fresh(request_der)
        if cached is not None:
            return cached.answer
        try:
            request = load_ocsp_request(request_der)
        except MalformedOCSPRequestError:
            return _unsuccessful("malformed_request")
        try:
            return self._respond(request, request_der, generation)
        except Exception:
            # The database (or the responder's renewal) failed: a pre-signed answer that is
            # still valid is still true, since no status can change while nothing commits.
            fallback = self._still_valid(request_der)
            if fallback is not None:
                log.warning("OCSP answered from cache: the full path failed", exc_info=True)
                return fallback
            log.exception("OCSP request failed")
            return _unsuccessful("internal_error")

    def _respond(self, request: OCSPRequestInfo, request_der: bytes, generation: int) -> OCSPAnswer:
        ca_ids = {self._issuer_of(cert_id) for cert_id in request.cert_ids}
        # One response has one signer, so all CertIDs must name the same CA we run.
        if len(ca_ids) != 1 or None in ca_ids:
            return _unsuccessful("unauthorized")
        authority = self._keyring.get(str(ca_ids.pop()))
        serials = [format_serial(cert_id.serial_number) for cert_id in request.cert_ids]
        with self._db.read() as session:
            states = certificate_queries.revocation_states(session, authority.ca_id, serials)
        now = self._clock.now()
        answer, signer = self._sign(authority, request, states, now)
        if request.nonce is None:
            self._store(request_der, answer, signer, generation, now)
            return answer
        twin = split_nonce_request(request_der)
        if twin is not None and self._fresh(twin[0]) is None:
            # Pre-sign the nonce-less twin, so the next nonce request for these CertIDs only
            # signs (answer_cached).
            plain = OCSPRequestInfo(cert_ids=request.cert_ids, nonce=None)
            twin_answer, twin_signer = self._sign(authority, plain, states, now)
            self._store(twin[0], twin_answer, twin_signer, generation, now)
        return answer

    def _fresh(self, key: bytes) -> _Cached | None:
        """The cached entry for `key` if no status changed since it was signed and it is
        younger than half its validity."""
        generation = self._signal.value()
        if generation != self._generation:
            self._flush(generation)
            return None
        entry = self._cache.get(key)
        if entry is None or self._clock.now() >= entry.refresh_after:
            return None
        return entry

    def _still_valid(self, request_der: bytes) -> OCSPAnswer | None:
        """A cached answer still inside its validity, for when the full path fails."""
        if self._signal.value() != self._generation:
            return None
        now = self._clock.now()
        entry = self._cache.get(request_der)
        if entry is not None and entry.answer.next_update and now < entry.answer.next_update:
            return entry.answer
        twin = split_nonce_request(request_der)
        entry = self._cache.get(twin[0]) if twin else None
        if twin is None or entry is None or entry.template is None:
            return None
        if entry.answer.next_update and now < entry.answer.next_update:
            return self._with_nonce(entry, twin[1], now)
        return None

    def _with_nonce(self, entry: _Cached, nonce_extn_value: bytes, now: datetime) -> OCSPAnswer:
        assert entry.template is not None
        produced_at = now.replace(microsecond=0)  # the same key within a second
        der = entry.template.sign_with_nonce(produced_at, nonce_extn_value)
        answer = entry.answer
        return OCSPAnswer(der, answer.this_update, answer.next_update, statuses=answer.statuses)

    def _store(
        self, key: bytes, answer: OCSPAnswer, signer: Signer, generation: int, now: datetime
    ) -> None:
        """Cache an answer signed from statuses read after `generation` was: if a status
        changed since, the answer may be stale and is not kept. The check and the insert
        hold the lock that _flush takes, so no flush can slip between them."""
        template = ResponseTemplate.of(answer.der, signer)
        size = len(key) + len(answer.der) + template.size + _ENTRY_OVERHEAD_BYTES
        entry = _Cached(answer, now + self._validity / 2, template, size)
        with self._lock:
            if self._signal.value() != generation or self._generation != generation:
                return
            previous = self._cache.pop(key, None)
            if previous is not None:
                self._cache_bytes -= previous.size
            self._cache[key] = entry
            self._cache_bytes += entry.size
            while self._cache_bytes > self._cache_max_bytes:
                oldest = next(iter(self._cache))
                self._cache_bytes -= self._cache.pop(oldest).size

    def _flush(self, generation: int) -> None:
        with self._lock:
            dropped = len(self._cache)
            self._cache = {}
            self._cache_bytes = 0
            self._generation = generation
        log.debug(
            "a status changed (generation %d): %d cached OCSP answers dropped", generation, dropped
        )

    def _sign(
        self,
        authority: Authority,
        request: OCSPRequestInfo,
        states: dict[str, RevocationState],
        now: datetime,
    ) -> tuple[OCSPAnswer, Signer]:
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
        answer = OCSPAnswer(
            der,
            this_update,
            next_update,
            cacheable=request.nonce is None,
            statuses=tuple(s.status for s in statuses),
        )
        return answer, signer

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
