"""The audit chain's hash: SHA-256 over a canonical encoding of an entry and the previous
entry's hash, so editing, deleting or reordering one entry breaks every link after it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The `prev_hash` of the first entry of a chain.
GENESIS_HASH = "0" * 64
ENCODING_VERSION = 1


@dataclass(frozen=True)
class ChainEntry:
    """What the hash covers: every field of an audit entry, and the link to the previous one."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, no NaN: one text per value, whichever database
    or JSON library stored and returned it."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def format_at(at: datetime) -> str:
    """Aware UTC with microseconds, as both SQLite and PostgreSQL keep it."""
    if at.tzinfo is None:
        raise ValueError("audit times must be aware (UTC)")
    utc = at.astimezone(UTC)
    if utc.year < 1000:  # strftime writes such years unpadded, and the hashes stored say so
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as that strftime, in a third of the time (every audited write hashes one).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encode_entry(entry: ChainEntry) -> bytes:
    """The canonical bytes that are hashed: a versioned JSON array, fields in a fixed order."""
    fields = [
        ENCODING_VERSION,
        entry.id,
        format_at(entry.at),
        entry.actor,
        entry.action,
        entry.target,
        entry.details,
        entry.prev_hash,
    ]
    return canonical_json(fields).encode("ascii")


def entry_hash(entry: ChainEntry) -> str:
    return hashlib.sha256(encode_entry(entry)).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back, with the hash stored beside it."""

    entry: ChainEntry
    hash: str


def first_broken(
    entries: Iterable[StoredEntry], *, prev_hash: str = GENESIS_HASH
) -> tuple[int | None, str]:
    """Walk entries in chain order. Returns the id of the first entry whose link to the one
    before it or whose own hash does not hold (None when all hold), and the last good hash,
    so a long chain can be checked page by page."""
    for stored in entries:
        if stored.entry.prev_hash != prev_hash or entry_hash(stored.entry) != stored.hash:
            return stored.entry.id, prev_hash
        prev_hash = stored.hash
    return None, prev_hash
