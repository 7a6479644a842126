"""Tables. Timestamps are aware UTC; serials are lowercase hex; DER and wrapped keys are bytes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware UTC; refuses naive datetimes so no local time ever reaches the table."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """On SQLite, the text SQLAlchemy's DATETIME writes ("2026-12-07 00:06:36.000000",
        naive UTC), made by `isoformat` in one step: SQLAlchemy's own formatting through a
        dict was a tenth of the group-commit writer's time (README: Performance)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            utc = self.process_bind_param(value, dialect)
            return None if utc is None else utc.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite hands back naive values; they were written as UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class CARecord(Base):
    __tablename__ = "cas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "root" | "issuing"
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("cas.id"))
    subject: Mapped[str] = mapped_column(String(1024))
    serial: Mapped[str] = mapped_column(String(40))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    # AES-GCM under the KEK; NULL for an offline root, whose key only the operator holds.
    key_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    created_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(default=False)  # the issuing CA new enrollments use
    # Last CRL number used (full and delta CRLs share it, RFC 5280 §5.2.3). The row is
    # locked while a CRL is built, so processes sharing the database never reuse a number.
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0)
    # A key in a PKCS#11 token: an RFC 7512 URI naming it (`pkcs11:object=<ca_id>;...`), with
    # key_wrapped NULL. No key material, only the name of the key inside the token.
    key_ref: Mapped[str | None] = mapped_column(String(255), default=None)


class CertificateRecord(Base):
    __tablename__ = "certificates"
    __table_args__ = (
        Index("ix_certificates_ca_revoked", "ca_id", "revoked_at"),
        Index("ix_certificates_ca_status_crl", "ca_id", "status_crl_number"),
        # Everything a full CRL reads, so a million entries come from the index alone.
        Index(
            "ix_certificates_crl_entries",
            "ca_id",
            "not_after",
            "serial",
            "crl_entry",
            sqlite_where=text("crl_entry IS NOT NULL"),
            postgresql_where=text("crl_entry IS NOT NULL"),
        ),
    )

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    ca_id: Mapped[str] = mapped_column(ForeignKey("cas.id"), index=True)
    profile: Mapped[str] = mapped_column(String(32), index=True)
    common_name: Mapped[str | None] = mapped_column(String(1024))
    names: Mapped[list[str]]
    # Names joined by spaces, for `q`. Text: up to 100 names of 1024 characters fit (the caps
    # are app.ca.names'); VARCHAR(8192) overflowed on PostgreSQL after signing (migration 0002).
    names_text: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime]
    not_after: Mapped[datetime] = mapped_column(index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    token_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))  # RFC 5280 name
    invalidity_date: Mapped[datetime | None]
    # Number of the first full CRL that shows the latest status change: a delta CRL with
    # base B lists every certificate whose status_crl_number is above B.
    status_crl_number: Mapped[int | None] = mapped_column(BigInteger)
    # The DER of this certificate's full-CRL entry (RFC 5280 §5.1.2.6) while it is revoked,
    # encoded once when the status changes (app.ca.crl_der); NULL while good.
    crl_entry: Mapped[bytes | None] = mapped_column(LargeBinary)


class TokenRecord(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex
    profiles: Mapped[list[str]]
    names: Mapped[list[str]]
    max_validity_days: Mapped[int | None]
    expires_at: Mapped[datetime]
    max_uses: Mapped[int]
    uses_left: Mapped[int]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(1024))


class CRLRecord(Base):
    __tablename__ = "crls"
    # RFC 5280 §5.2.3: a full and a delta CRL issued together share their number.
    __table_args__ = (
        UniqueConstraint("ca_id", "number", "is_delta", name="uq_crls_ca_number_kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ca_id: Mapped[str] = mapped_column(ForeignKey("cas.id"))
    number: Mapped[int] = mapped_column(BigInteger)
    is_delta: Mapped[bool]
    delta_base: Mapped[int | None] = mapped_column(BigInteger)  # the base of a delta CRL
    this_update: Mapped[datetime]
    next_update: Mapped[datetime]
    # b"" once superseded: only the latest full and delta CRL are served; an older full CRL
    # stays as a row only while a delta may name it as its base (app.services.crls).
    der: Mapped[bytes] = mapped_column(LargeBinary)
    # A full CRL stored in parts (migration 0015): `der` is the CRL without its entries, which
    # are the crl_parts rows listed in `parts` (ids, comma-separated, in order) put in at
    # offset `entries_at`; `size` is the whole CRL's length. NULL: `der` is the whole CRL.
    parts: Mapped[str | None] = mapped_column(Text, default=None)
    entries_at: Mapped[int | None] = mapped_column(default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)


class CRLPartRecord(Base):
    """A run of a full CRL's entries, DER joined (~256 KiB), never changed once written: a
    publication writes the parts that changed as new rows, so a million-entry CRL after one
    revocation stores one part, not 50 MB (app.services.crl_entries)."""

    __tablename__ = "crl_parts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ca_id: Mapped[str] = mapped_column(ForeignKey("cas.id"), index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)


class ResponderRecord(Base):
    """Delegated OCSP responder certificates (profile `ocsp`), keys wrapped like CA keys."""

    __tablename__ = "ocsp_responders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ca_id: Mapped[str] = mapped_column(ForeignKey("cas.id"), index=True)
    serial: Mapped[str] = mapped_column(String(40))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    not_after: Mapped[datetime]
    created_at: Mapped[datetime]


class AuditRecord(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(1024), index=True)
    details: Mapped[dict[str, Any]]
    # The hash chain (app.ca.audit_chain): ids are assigned under the chain head's lock, so
    # id order is chain order; `hash` covers every field above and `prev_hash`.
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainRecord(Base):
    """The head of the audit chain: one row, locked by every append, so appends from any
    number of processes line up one after another and the chain never forks."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


# --- ACME (RFC 8555) ---------------------------------------------------------------------------


class AcmeEabRecord(Base):
    """External account binding credentials: the HMAC key is wrapped under the KEK (it must
    verify a MAC, so a hash would not do), bound to at most one account."""

    __tablename__ = "acme_eab_credentials"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM, the kid as label
    names: Mapped[list[str]]
    profile: Mapped[str] = mapped_column(String(32))
    max_validity_days: Mapped[int | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(1024))
    account_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class AcmeAccountRecord(Base):
    __tablename__ = "acme_accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    thumbprint: Mapped[str] = mapped_column(String(64), unique=True)  # RFC 7638, SHA-256
    jwk: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # valid | deactivated | revoked
    contact: Mapped[list[str]]
    eab_kid: Mapped[str | None] = mapped_column(ForeignKey("acme_eab_credentials.kid"))
    created_at: Mapped[datetime]


class AcmeNonceRecord(Base):
    """Issued, unused nonces: inserted when issued, deleted when used (single use across
    processes sharing the database)."""

    __tablename__ = "acme_nonces"

    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AcmeOrderRecord(Base):
    __tablename__ = "acme_orders"
    # The account's orders list is paged by keyset (created_at, id), newest first.
    __table_args__ = (Index("ix_acme_orders_account_created", "account_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("acme_accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending|ready|processing|valid|invalid
    identifiers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    not_after: Mapped[datetime | None]  # requested notAfter of the certificate
    expires_at: Mapped[datetime]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    certificate_serial: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime]


class AcmeAuthorizationRecord(Base):
    __tablename__ = "acme_authorizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("acme_orders.id"), index=True)
    identifier_type: Mapped[str] = mapped_column(String(8))  # dns | ip
    identifier_value: Mapped[str] = mapped_column(String(255))
    wildcard: Mapped[bool]
    status: Mapped[str] = mapped_column(String(16))  # pending|valid|invalid|deactivated
    expires_at: Mapped[datetime]


class AcmeChallengeRecord(Base):
    """Challenge state lives here so that a restart resumes validation: `processing` rows are
    claimed by one validator at a time (`claimed_until`) and retried when a claim lapses."""

    __tablename__ = "acme_challenges"
    __table_args__ = (Index("ix_acme_challenges_status", "status", "claimed_until"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    authorization_id: Mapped[str] = mapped_column(ForeignKey("acme_authorizations.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))  # http-01 | dns-01
    token: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending|processing|valid|invalid
    validated_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    claimed_until: Mapped[datetime | None]  # also: not before then, when a retry waits
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
