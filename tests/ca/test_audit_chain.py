"""The audit chain's hash and its canonical encoding (pure: no database)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ca.audit_chain import (
    GENESIS_HASH,
    ChainEntry,
    StoredEntry,
    canonical_json,
    encode_entry,
    entry_hash,
    first_broken,
    format_at,
)

AT = datetime(2026, 12, 6, 3, 0, 0, 123456, tzinfo=UTC)


def chain(count: int) -> list[StoredEntry]:
    entries, prev = [], GENESIS_HASH
    for n in range(1, count + 1):
        entry = ChainEntry(
            id=n,
            at=AT + timedelta(seconds=n),
            actor="cert:ab CN=admin",
            action="token.create",
            target=f"tok_{n}",
            details={"names": [f"n{n}.zone"], "max_uses": n},
            prev_hash=prev,
        )
        prev = entry_hash(entry)
        entries.append(StoredEntry(entry, prev))
    return entries


def test_encoding_is_canonical() -> None:
    entry = chain(1)[0].entry
    shuffled = dataclasses.replace(entry, details={"max_uses": 1, "names": ["n1.zone"]})
    same_moment = dataclasses.replace(entry, at=entry.at.astimezone(timezone(timedelta(hours=2))))

    assert encode_entry(entry) == encode_entry(shuffled) == encode_entry(same_moment)
    assert encode_entry(entry) == (
        b'[1,1,"2026-12-06T03:00:01.123456Z","cert:ab CN=admin","token.create","tok_1",'
        b'{"max_uses":1,"names":["n1.zone"]},"' + GENESIS_HASH.encode() + b'"]'
    )
    assert canonical_json({"b": "é", "a": [1, 2]}) == '{"a":[1,2],"b":"\\u00e9"}'


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("id", 2, id="id"),
        pytest.param("at", AT + timedelta(microseconds=1), id="at"),
        pytest.param("actor", "cert:ab CN=admim", id="actor"),
        pytest.param("action", "token.revoke", id="action"),
        pytest.param("target", "tok_2", id="target"),
        pytest.param("details", {"names": ["n1.zone"], "max_uses": 2}, id="details"),
        pytest.param("prev_hash", "1" * 64, id="prev_hash"),
    ],
)
def test_every_field_is_covered(field: str, value: Any) -> None:
    entry = chain(1)[0].entry
    assert entry_hash(dataclasses.replace(entry, **{field: value})) != entry_hash(entry)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone.max]),
    )
)
def test_times_are_written_as_strftime_writes_them(at: datetime) -> None:
    """The hashes already stored were made with strftime: any other writer must agree."""
    assert format_at(at) == at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        entry_hash(dataclasses.replace(chain(1)[0].entry, at=datetime(2026, 1, 1)))


def tampered(kind: str, entries: list[StoredEntry]) -> list[StoredEntry]:
    changed = list(entries)
    if kind == "edit":
        changed[2] = dataclasses.replace(
            changed[2], entry=dataclasses.replace(changed[2].entry, target="tok_x")
        )
    elif kind == "edit and rehash":
        edited = dataclasses.replace(changed[2].entry, target="tok_x")
        changed[2] = StoredEntry(edited, entry_hash(edited))
    elif kind == "delete":
        del changed[2]
    elif kind == "swap":
        changed[2], changed[3] = changed[3], changed[2]
    return changed


@pytest.mark.parametrize(
    ("kind", "first_bad"),
    [
        pytest.param("edit", 3, id="edit/the edited entry"),
        pytest.param("edit and rehash", 4, id="edit and rehash/the next entry"),
        pytest.param("delete", 4, id="delete/the entry after the gap"),
        pytest.param("swap", 4, id="swap/the first moved entry"),
    ],
)
def test_first_broken_names_the_first_entry_that_fails(kind: str, first_bad: int) -> None:
    entries = chain(6)
    assert first_broken(entries) == (None, entries[-1].hash)

    broken, _last_good = first_broken(tampered(kind, entries))

    assert broken == first_bad


def test_a_long_chain_is_checked_page_by_page() -> None:
    entries = chain(7)
    broken, prev = first_broken(entries[:3])
    assert broken is None
    assert first_broken(entries[3:], prev_hash=prev) == (None, entries[-1].hash)
    assert first_broken(entries[4:], prev_hash=prev)[0] == 5, "a page that skips an entry"
