"""Delegated OCSP responders: one `ocsp`-profile certificate per CA, issued by MintCA itself
and replaced well before it expires, or at once when it is revoked or put on hold (it carries
id-pkix-ocsp-nocheck, so relying parties never check it: MintCA must stop using it). Keys are
wrapped with the KEK like CA keys."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.ca.bootstrap import responder_common_name
from app.ca.issuance import Endpoints
from app.ca.keys import generate_private_key, wrap_private_key
from app.ca.names import RequestedNames
from app.ca.profiles import PROFILES
from app.ca.serials import format_serial
from app.ca.signer import LocalSigner, Signer
from app.clock import Clock
from app.db import certificates as certificate_queries
from app.db import responders as responder_queries
from app.db.cas import lock_ca
from app.db.engine import Database
from app.db.models import ResponderRecord
from app.services.certificates import sign_leaf, store_certificate
from app.services.keyring import Authority, Keyring
from app.services.status_signal import StatusSignal

RESPONDER_VALIDITY = timedelta(days=7)
# Replace with two days left, so an answer signed now never outlives its signer's certificate
# by much and a stopped replica has time to notice.
RENEW_BEFORE = timedelta(days=2)


@dataclass(frozen=True)
class Responder:
    certificate: x509.Certificate
    signer: Signer
    checked_at_generation: int = -1  # status generation at which it was last found unrevoked


class ResponderService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        endpoints: Endpoints,
        *,
        signal: StatusSignal | None = None,
    ) -> None:
        self._db = db
        self._signal = signal or StatusSignal(None)
        self._clock = clock
        self._keyring = keyring
        self._endpoints = endpoints
        self._lock = threading.Lock()
        self._current: dict[str, Responder] = {}

    def current(self, authority: Authority) -> Responder:
        """The responder for a CA, loaded once, replaced when it nears expiry and looked up
        again after any status change (a revoked or held responder is replaced at once)."""
        generation = self._signal.value()
        responder = self._current.get(authority.ca_id)
        if responder is not None and not self._stale(responder, generation):
            return responder
        with self._lock:
            responder = self._current.get(authority.ca_id)
            if responder is not None and not self._due(responder.certificate):
                if responder.checked_at_generation == generation:
                    return responder
                if not self._revoked(responder):  # one read; no write lock in the common case
                    responder = replace(responder, checked_at_generation=generation)
                    self._current[authority.ca_id] = responder
                    return responder
            responder = self._load_or_issue(authority, generation)
            self._current[authority.ca_id] = responder
            return responder

    def _revoked(self, responder: Responder) -> bool:
        serial = format_serial(responder.certificate.serial_number)
        with self._db.read() as session:
            record = certificate_queries.find_certificate(session, serial)
            return record is None or record.revoked_at is not None

    def _stale(self, responder: Responder, generation: int) -> bool:
        return responder.checked_at_generation != generation or self._due(responder.certificate)

    def _due(self, certificate: x509.Certificate) -> bool:
        return certificate.not_valid_after_utc - self._clock.now() < RENEW_BEFORE

    def _load_or_issue(self, authority: Authority, generation: int) -> Responder:
        with self._db.write() as session:
            # One replica issues; the others then load it. The CA row, read under its lock,
            # names the KEK that new keys are wrapped under (see `mintca kek rotate`).
            kek = self._keyring.kek_for(lock_ca(session, authority.ca_id).key_wrapped)
            row = responder_queries.newest_for(session, authority.ca_id)
            if row is not None:
                record = certificate_queries.find_certificate(session, row.serial)
                revoked = record is None or record.revoked_at is not None
                responder = self._from_row(row, generation)
                if not revoked and not self._due(responder.certificate):
                    return responder
            now = self._clock.now()
            key = generate_private_key("ec-p256")
            ca_name = authority.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            names = RequestedNames(common_name=responder_common_name(str(ca_name[0].value)))
            certificate = sign_leaf(
                authority,
                public_key=key.public_key(),
                names=names,
                profile=PROFILES["ocsp"],
                validity=RESPONDER_VALIDITY,
                now=now,
                endpoints=self._endpoints,
            )
            serial = format_serial(certificate.serial_number)
            store_certificate(
                session,
                certificate,
                ca_id=authority.ca_id,
                profile="ocsp",
                names=names,
                token_id=None,
                now=now,
                actor="mintca",
            )
            session.add(
                ResponderRecord(
                    ca_id=authority.ca_id,
                    serial=serial,
                    cert_der=certificate.public_bytes(Encoding.DER),
                    key_wrapped=wrap_private_key(key, kek=kek, label=f"ocsp:{serial}"),
                    not_after=certificate.not_valid_after_utc,
                    created_at=now,
                )
            )
            return Responder(certificate, LocalSigner(key), generation)

    def _from_row(self, row: ResponderRecord, generation: int) -> Responder:
        key = self._keyring.unwrap(row.key_wrapped, label=f"ocsp:{row.serial}")
        certificate = x509.load_der_x509_certificate(row.cert_der)
        return Responder(certificate, LocalSigner(key), generation)
