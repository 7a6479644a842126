"""HTTP bodies (pydantic at the edge only). Serials are lowercase hex; times ISO 8601 UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from app.ca.keys import KeyType
from app.services.tokens import MAX_TOKEN_TTL


def _in_utc(value: datetime) -> datetime:
    """No zone means UTC. A time with no UTC equivalent in Python's range (year 1 east of
    Greenwich, 9999 west of it) is refused here rather than overflowing at the database."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


# A time from a client, in UTC: `since`/`until` take one without a zone, bodies need a zone.
UTCTime = Annotated[datetime, AfterValidator(_in_utc)]
AwareUTCTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class _Strict(BaseModel):
    """A request body: unknown fields and NUL characters are refused (400). PostgreSQL text
    cannot hold U+0000 and SQLite can; refusing it here keeps both the same."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        strings = value if isinstance(value, list) else [value]
        if any(isinstance(s, str) and "\x00" in s for s in strings):
            raise ValueError("must not contain NUL (U+0000) characters")
        return value


class EnrollRequest(_Strict):
    csr: str = Field(max_length=64 * 1024, description="PEM PKCS#10 (text around it is ignored)")
    profile: str | None = None
    validity_days: int | None = None


class IssuedResponse(BaseModel):
    serial: str
    certificate: str
    chain: list[str]
    not_before: datetime
    not_after: datetime
    profile: str


class RoleCertificateRequest(_Strict):
    csr: str = Field(max_length=64 * 1024, description="PEM PKCS#10 naming the holder by CN")
    role: Literal["auditor", "operator", "admin"]
    validity_days: int | None = None


class RenewRequest(_Strict):
    csr: str = Field(max_length=64 * 1024)


class StatusResponse(BaseModel):
    serial: str
    status: Literal["good", "revoked", "expired"]
    not_after: datetime
    revoked_at: datetime | None
    reason: str | None


class TokenCreateRequest(_Strict):
    profile: str | list[str] | None = None
    names: list[str] = Field(min_length=1, max_length=100)
    ttl_seconds: int = Field(default=3600, ge=1, le=int(MAX_TOKEN_TTL.total_seconds()))
    max_uses: int = Field(default=1, ge=1, le=100_000)
    max_validity_days: int | None = None

    @property
    def profiles(self) -> list[str]:
        if self.profile is None:
            return []
        return [self.profile] if isinstance(self.profile, str) else list(self.profile)


class TokenCreateResponse(BaseModel):
    token: str
    id: str
    expires_at: datetime


class CertificateDetails(BaseModel):
    serial: str
    ca_id: str
    profile: str
    common_name: str | None
    names: list[str]
    status: Literal["good", "revoked", "expired"]
    not_before: datetime
    not_after: datetime
    created_at: datetime
    revoked_at: datetime | None
    reason: str | None
    invalidity_date: datetime | None
    pem: str | None = None


class CertificatePage(BaseModel):
    items: list[CertificateDetails]
    next_cursor: str | None


class RevokeRequest(_Strict):
    reason: str = Field(description="an RFC 5280 reason name, e.g. keyCompromise")
    invalidity_date: AwareUTCTime | None = None


class CAResponse(BaseModel):
    ca_id: str
    kind: str
    parent_id: str | None
    subject: str
    serial: str
    not_before: datetime
    not_after: datetime
    active: bool
    certificate_url: str
    crl_url: str
    # Where this CA's own status is published: its parent's CRL (None for the root).
    issuer_crl_url: str | None = None


class AuditEntryResponse(BaseModel):
    id: int  # the position in the chain
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str  # app.ca.audit_chain: SHA-256 over the entry and prev_hash
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntryResponse]  # newest first
    next_cursor: str | None  # pass as `cursor` for the next (older) page


class AuditChainHead(BaseModel):
    id: int
    hash: str


class AuditChainPage(BaseModel):
    head: AuditChainHead  # the walk ends here; its hash must be the last entry's
    items: list[AuditEntryResponse]  # oldest first
    next_cursor: str | None  # pass as `after_id` for the next page


class HealthResponse(BaseModel):
    status: str


class CARotateRequest(_Strict):
    """Options of a rotation; `{}` keeps the previous issuing CA's key type and makes the new
    one valid for 5 years (never past the root)."""

    key_type: KeyType | None = None
    validity_days: int = Field(default=1825, ge=1, le=36500)


class RevocationFilterRequest(_Strict):
    """Every given field must match; at least one is required (400 otherwise)."""

    ca_id: str | None = Field(default=None, max_length=64)
    profile: str | None = Field(default=None, max_length=32)
    q: str | None = Field(default=None, max_length=256, description="name substring")
    token_id: str | None = Field(default=None, max_length=32)
    issued_before: AwareUTCTime | None = None
    issued_after: AwareUTCTime | None = None


class BulkRevocationRequest(_Strict):
    filter: RevocationFilterRequest
    reason: str = Field(description="an RFC 5280 reason name, e.g. keyCompromise")
    dry_run: bool = Field(default=True, description="only count; false revokes every match")


class BulkRevocationResponse(BaseModel):
    count: int
    serials: list[str] = Field(description="the first 100 serials, in order")
    dry_run: bool
    crl_numbers: dict[str, int] = Field(description="CA id -> the CRL that lists them")


class AcmeEabCreateRequest(_Strict):
    """`POST /admin/acme/eab`: what accounts bound to the credential may order."""

    names: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        min_length=1, max_length=100
    )
    profile: str | None = None
    max_validity_days: int | None = Field(default=None, ge=1, le=397)


class AcmeEabCreateResponse(BaseModel):
    kid: str
    hmac_key: str  # unpadded base64url (RFC 7515 §2), shown once
