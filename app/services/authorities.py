"""The CAs as operators see them: listing, rotation of the issuing CA, and the root's CRL
when the root key is offline (signed here with a key the operator brings)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from app.ca.bootstrap import ISSUING_VALIDITY, NewCA, key_type_of, sign_issuing_ca
from app.ca.issuance import Endpoints
from app.ca.keys import KEY_TYPES, PrivateKey, generate_private_key, wrap_private_key
from app.ca.serials import format_serial
from app.ca.signer import LocalSigner, Signer
from app.clock import Clock
from app.db.cas import active_issuer_id, count_issuing, lock_ca, set_active_issuer
from app.db.engine import Database
from app.db.models import CARecord
from app.errors import InvalidRequestError, OfflineKeyError, ServiceUnavailableError
from app.services.audit import record
from app.services.crls import CRLService, PublishedCRL
from app.services.hsm import TOKEN_KEY_TYPES, key_ref
from app.services.keyring import Authority, Keyring

log = logging.getLogger(__name__)

# An offline root signs its CRL only when the operator brings the key (init, each rotation,
# `mintca ca root-crl`), so that CRL must stay current for a long time (RFC 5280 §5.1.2.5
# lets nextUpdate be as far as the issuer promises to publish the next one).
ROOT_CRL_VALIDITY = timedelta(days=365)


def add_ca(
    session: Session,
    ca: NewCA,
    *,
    kind: str,
    parent: str | None,
    kek: bytes,
    now: datetime,
    active: bool,
    offline: bool = False,
) -> None:
    """Insert a CA row; an offline CA's key is never stored, not even wrapped; a key made
    in the PKCS#11 token is stored as its reference only."""
    certificate = ca.certificate
    in_token = ca.private_key is None
    session.add(
        CARecord(
            id=ca.ca_id,
            kind=kind,
            parent_id=parent,
            subject=certificate.subject.rfc4514_string(),
            serial=format_serial(certificate.serial_number),
            cert_der=certificate.public_bytes(Encoding.DER),
            key_wrapped=None
            if offline or ca.private_key is None
            else wrap_private_key(ca.private_key, kek=kek, label=ca.ca_id),
            key_ref=key_ref(ca.ca_id) if in_token and not offline else None,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            created_at=now,
            active=active,
            crl_number=0,
        )
    )


def _organisation(authority: Authority) -> str:
    names = authority.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else "MintCA"


class AuthorityService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        crls: CRLService,
        endpoints: Endpoints,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._crls = crls
        self._endpoints = endpoints

    def list(self) -> list[Authority]:
        """Every CA, as the database says now (another process may have rotated)."""
        self._keyring.refresh()
        return self._keyring.all()

    def rotate(
        self,
        *,
        actor: str,
        key_type: str | None = None,
        validity: timedelta = ISSUING_VALIDITY,
        root_key: PrivateKey | None = None,
    ) -> Authority:
        """Make a new issuing CA under the root and make it the active one, in one
        transaction with its first CRL and the `ca.rotate` audit row. The previous CA stays:
        it keeps its CRL sequence and OCSP for what it issued. The root row's lock orders
        concurrent rotations; notAfter never passes the root's.

        `root_key` signs for an offline root (its CRL is then re-signed too).

        Raises:
            OfflineKeyError: the root key is offline and `root_key` was not given.
            InvalidRequestError: an unknown key type (or one a PKCS#11 token cannot make), or
                `root_key` is not the root's key.
        """
        key_type = key_type or self._default_key_type()
        if key_type not in KEY_TYPES:
            raise InvalidRequestError(f"key_type: choose one of {', '.join(KEY_TYPES)}")
        # Outside the transaction: RSA takes seconds. With a token, the key is made there.
        token = self._keyring.token
        if token and key_type not in TOKEN_KEY_TYPES:
            raise InvalidRequestError(
                f"key_type: the CA keys are in a PKCS#11 token; choose one of "
                f"{', '.join(TOKEN_KEY_TYPES)}"
            )
        key = None if token else generate_private_key(key_type)
        key_signer = token.generate(key_type) if token else None
        try:
            with self._db.write() as session:
                root = self._keyring.root()
                lock_ca(session, root.ca_id)
                self._keyring.load_from(session)  # fresh, under the lock
                root = self._keyring.root()
                previous_id = active_issuer_id(session)
                now = self._clock.now()
                new = sign_issuing_ca(
                    name=_organisation(root),
                    key_type=key_type,
                    key=key,
                    key_signer=key_signer,
                    issuer=root.issuer,
                    signer=self._root_signer(root, root_key),
                    now=now,
                    validity=validity,
                    endpoints=self._endpoints,
                    generation=count_issuing(session) + 1,
                    ocsp=not root.offline,
                )
                self._activate(session, new, root, now=now)
                if root_key is not None:
                    self._publish_root_crl(session, root, root_key, now=now)
                record(
                    session,
                    at=now,
                    actor=actor,
                    action="ca.rotate",
                    target=new.ca_id,
                    details={
                        "previous": previous_id,
                        "root": root.ca_id,
                        "key_type": key_type,
                        "not_after": new.certificate.not_valid_after_utc.isoformat(),
                    },
                )
        finally:
            self._keyring.load()  # what committed, and nothing that rolled back
        log.info("rotated: issuing CA %s is active (previous %s)", new.ca_id, previous_id)
        return self._keyring.get(new.ca_id)

    def _default_key_type(self) -> str:
        """The active issuing CA's kind of key (the root's if there is none)."""
        try:
            model = self._keyring.loaded_active_issuer()
        except ServiceUnavailableError:
            model = self._keyring.root()
        return key_type_of(model.certificate.public_key())  # type: ignore[arg-type]  # CA keys are of the accepted types

    def _activate(self, session: Session, new: NewCA, root: Authority, *, now: datetime) -> None:
        """Store the new CA as the only active issuing CA and publish its first CRL; the
        keyring knows it before the commit because publishing signs with it."""
        kek = self._keyring.kek
        add_ca(session, new, kind="issuing", parent=root.ca_id, kek=kek, now=now, active=True)
        session.flush()
        set_active_issuer(session, new.ca_id)
        self._keyring.add(
            Authority(
                new.ca_id,
                "issuing",
                root.ca_id,
                new.certificate,
                new.signer,
                active=True,
                in_token=new.private_key is None,
            )
        )
        self._crls.publish(session, new.ca_id, now=now)

    def sign_root_crl(self, root_key: PrivateKey, *, actor: str) -> PublishedCRL:
        """Re-sign the offline root's CRL (and its delta) with the key the operator brings,
        audited as `ca.root_crl`.

        Raises:
            InvalidRequestError: `root_key` is not the root's key.
        """
        with self._db.write() as session:
            root = self._keyring.root()
            lock_ca(session, root.ca_id)
            self._root_signer(root, root_key)
            now = self._clock.now()
            published = self._publish_root_crl(session, root, root_key, now=now)
            record(
                session,
                at=now,
                actor=actor,
                action="ca.root_crl",
                target=root.ca_id,
                details={
                    "number": published.number,
                    "next_update": published.next_update.isoformat(),
                },
            )
            return published

    def _root_signer(self, root: Authority, root_key: PrivateKey | None) -> Signer:
        if root_key is None:
            if root.offline:
                raise OfflineKeyError(
                    "the root key is offline: run `mintca ca rotate --root-key FILE` on a host "
                    "with the database and the KEK"
                )
            return root.signer
        if root_key.public_key() != root.certificate.public_key():
            raise InvalidRequestError("the key given is not the root CA's key")
        return LocalSigner(root_key)

    def _publish_root_crl(
        self, session: Session, root: Authority, root_key: PrivateKey, *, now: datetime
    ) -> PublishedCRL:
        """The root's CRL signed with a key this process holds only for this call: a keyring
        of its own, so the process's keyring never keeps the offline key."""
        keyring = Keyring(self._db, self._keyring.kek, self._keyring.token)
        keyring.add(dataclasses.replace(root, signer=LocalSigner(root_key)))
        crls = CRLService(self._db, self._clock, keyring, self._endpoints, ROOT_CRL_VALIDITY)
        return crls.publish(session, root.ca_id, now=now)
