"""One-time enrollment tokens: shown once, stored as a SHA-256 hash, spent atomically."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.ca.names import has_control_characters, is_dns_name
from app.ca.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from app.clock import Clock
from app.db import tokens as token_queries
from app.db.engine import Database
from app.db.models import TokenRecord
from app.errors import ProfileViolationError, TokenRejectedError
from app.services.audit import record

TOKEN_PREFIX = "mintca_"  # noqa: S105 - a prefix that makes leaked tokens greppable
MAX_TOKEN_TTL = timedelta(days=30)
# An enrollment looks its token up once per GRANT_CACHE_SECONDS per process, not per request.
GRANT_CACHE_SECONDS = 30.0
GRANT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class CreatedToken:
    token: str  # the secret: returned once, never stored
    id: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenGrant:
    """What an authenticated token allows."""

    id: str
    profiles: tuple[str, ...]
    names: tuple[str, ...]
    max_validity_days: int | None
    expires_at: datetime


def hash_secret(secret: str) -> str:
    # The secret has 256 bits of entropy, so a fast hash is enough (no dictionary to guess).
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # hash of the secret -> (grant, when cached); dict operations are atomic under the GIL.
        self._grants: dict[str, tuple[TokenGrant, float]] = {}

    def create(
        self,
        *,
        actor: str,
        profiles: list[str],
        names: list[str],
        ttl: timedelta,
        max_uses: int,
        max_validity_days: int | None,
    ) -> CreatedToken:
        """Raises:
        ProfileViolationError: an unknown or non-enrollable profile, a bad name pattern,
            a TTL or validity out of range."""
        profiles = profiles or [DEFAULT_PROFILE]
        for name in profiles:
            if not get_profile(name).enrollable:
                raise ProfileViolationError(f"profile {name!r} is not issued through tokens")
        if not names:
            raise ProfileViolationError("a token must allow at least one name")
        for pattern in names:
            _check_pattern(pattern)
        if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
            raise ProfileViolationError(f"ttl must be between 1 s and {MAX_TOKEN_TTL.days} days")
        if max_validity_days is not None:
            longest = max(PROFILES[p].max_validity.days for p in profiles)
            if not 1 <= max_validity_days <= longest:
                raise ProfileViolationError(
                    f"max_validity_days must be between 1 and {longest} for these profiles"
                )
        now = self._clock.now()
        token_id = "tok_" + secrets.token_hex(8)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + ttl
        with self._db.write() as session:
            session.add(
                TokenRecord(
                    id=token_id,
                    secret_hash=hash_secret(secret),
                    profiles=profiles,
                    names=names,
                    max_validity_days=max_validity_days,
                    expires_at=expires_at,
                    max_uses=max_uses,
                    uses_left=max_uses,
                    created_at=now,
                    created_by=actor,
                )
            )
            record(
                session,
                at=now,
                actor=actor,
                action="token.create",
                target=token_id,
                details={"profiles": profiles, "names": names, "max_uses": max_uses},
            )
        return CreatedToken(secret, token_id, expires_at)

    def authenticate(self, secret: str | None) -> TokenGrant:
        """Check a bearer token in the database without spending it.

        Raises:
            TokenRejectedError: missing, unknown, expired or used up (one message for all,
                so a caller learns nothing about which tokens exist).
        """
        if not secret:
            raise TokenRejectedError("an enrollment token is required (Authorization: Bearer)")
        key = hash_secret(secret)
        now = self._clock.now()
        with self._db.read() as session:
            token = token_queries.find_by_hash(session, key)
        if token is None or token.uses_left <= 0 or token.expires_at <= now:
            self._grants.pop(key, None)
            raise TokenRejectedError("the token is unknown, expired or used up")
        grant = TokenGrant(
            token.id,
            tuple(token.profiles),
            tuple(token.names),
            token.max_validity_days,
            token.expires_at,
        )
        if len(self._grants) >= GRANT_CACHE_SIZE:
            self._grants.pop(next(iter(self._grants)), None)  # the oldest entry
        self._grants[key] = (grant, time.monotonic())
        return grant

    def authenticate_for_enrollment(self, secret: str | None) -> TokenGrant:
        """`authenticate`, answered from memory when this process saw the token within
        GRANT_CACHE_SECONDS: what a token allows never changes after it is made, and its uses
        and expiry are checked again by the spend, which is the authority (enrollment calls
        `forget` when the spend refuses, so a used-up token's next request is refused before
        anything is signed).

        Raises:
            TokenRejectedError: as `authenticate`.
        """
        return self.cached_grant(secret) or self.authenticate(secret)

    def cached_grant(self, secret: str | None) -> TokenGrant | None:
        """The grant this process saw for the token within GRANT_CACHE_SECONDS and not yet
        expired, from memory only (no query: safe on an event loop); None otherwise."""
        cached = self._grants.get(hash_secret(secret)) if secret else None
        if (
            cached is not None
            and time.monotonic() - cached[1] < GRANT_CACHE_SECONDS
            and cached[0].expires_at > self._clock.now()
        ):
            return cached[0]
        return None

    def forget(self, secret: str) -> None:
        """Drop a token's cached grant (its spend failed: used up or expired), so its next
        request is refused before anything is signed."""
        self._grants.pop(hash_secret(secret), None)


def _check_pattern(pattern: str) -> None:
    """Names are DNS names, IPs, URIs or emails, compared exactly; only DNS takes `*.suffix`."""
    if has_control_characters(pattern):
        raise ProfileViolationError(f"a name holds a control character: {pattern[:80]!r}")
    if pattern.startswith("*."):
        if not is_dns_name(pattern[2:], allow_wildcard=False):
            raise ProfileViolationError(f"not a DNS suffix pattern: {pattern!r}")
        return
    if not pattern or len(pattern) > 1024 or any(c.isspace() for c in pattern):
        raise ProfileViolationError(f"not a name: {pattern!r}")
    if "*" in pattern and not is_dns_name(pattern):
        raise ProfileViolationError(f"wildcards are allowed only as '*.suffix': {pattern!r}")
