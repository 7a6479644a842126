"""Tables. Timestamps are aware UTC; serials are lowercase hex; DER and wrapped keys are bytes."""

from __future__ import annotations

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
