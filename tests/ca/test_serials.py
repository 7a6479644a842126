"""Serial numbers: the issuing time over 107 random bits, positive; lowercase hex out, several
spellings in."""

from __future__ import annotations

import secrets
import time

import pytest
from cryptography import x509

from app.ca.serials import (
    RANDOM_BITS,
    SERIAL_BITS,
    format_serial,
    new_serial_number,
    parse_serial,
)
from app.errors import InvalidSerialError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("1f", 0x1F, id="lowercase"),
        pytest.param("1F", 0x1F, id="uppercase"),
        pytest.param("aBcD", 0xABCD, id="mixed case"),
        pytest.param("01:2a:FF", 0x012AFF, id="colon separated"),
        pytest.param("00ff", 0xFF, id="leading zeros"),
        pytest.param("00:00:01", 1, id="colons and leading zeros"),
        pytest.param("12 34", 0x1234, id="space separated"),
        pytest.param("f" * 40, 2**160 - 1, id="20 octets"),
        pytest.param("00" + "f" * 40, 2**160 - 1, id="20 octets after leading zeros"),
        pytest.param("1", 1, id="one"),
    ],
)
def test_parse_serial(text: str, value: int) -> None:
    assert parse_serial(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("0", id="zero"),
        pytest.param("00:00", id="zero with colons"),
        pytest.param(":", id="only a colon"),
        pytest.param("xyz", id="not hex"),
        pytest.param("0x1f", id="0x prefix"),
        pytest.param("-1f", id="negative"),
        pytest.param("12-34", id="dashes"),
        pytest.param("f" * 41, id="21 octets"),
        pytest.param("1" + "0" * 40, id="21 octets with zeros"),
        pytest.param("\uff11\uff12", id="full-width digits"),
        pytest.param("1f\x00", id="nul byte"),
    ],
)
def test_parse_serial_refuses(text: str) -> None:
    with pytest.raises(InvalidSerialError) as raised:
        parse_serial(text)

    assert raised.value.status == 400


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1, "1", id="one"),
        pytest.param(0xABCDEF, "abcdef", id="lowercase"),
        pytest.param(0x0102, "102", id="no leading zeros"),
        pytest.param(2**159 - 1, "7" + "f" * 39, id="largest"),
    ],
)
def test_format_serial(value: int, text: str) -> None:
    assert format_serial(value) == text


def test_format_and_parse_round_trip() -> None:
    for _ in range(100):
        value = secrets.randbits(SERIAL_BITS) or 1
        assert parse_serial(format_serial(value)) == value
        assert parse_serial(format_serial(value).upper()) == value


def test_new_serial_numbers() -> None:
    before = time.time_ns() // 1000
    draws = [new_serial_number() for _ in range(200)]
    after = time.time_ns() // 1000

    assert all(0 < s < 2**159 for s in draws), "positive and at most 20 DER octets"
    assert len(set(draws)) == len(draws), "no repeats"
    random_parts = [s % 2**RANDOM_BITS for s in draws]
    assert RANDOM_BITS >= 64, "CA/B Forum BR 7.1: at least 64 bits of CSPRNG output"
    assert len({r >> (RANDOM_BITS - 8) for r in random_parts}) > 10, "the random bits' top varies"
    assert len({r % 256 for r in random_parts}) > 10, "and so does their bottom"
    assert all(before <= s >> RANDOM_BITS <= after for s in draws), "the issuing time on top"


def test_serials_issued_later_sort_after_as_numbers_and_as_stored_text() -> None:
    """What keeps a batch's index entries on one B-tree page: later serials are greater, as
    integers and as the hex text the database stores (same length until 2112)."""
    earlier = [new_serial_number() for _ in range(50)]
    time.sleep(0.001)
    later = [new_serial_number() for _ in range(50)]

    assert max(earlier) < min(later)
    assert max(map(format_serial, earlier)) < min(map(format_serial, later))
    assert {len(format_serial(s)) for s in earlier + later} == {40}


def test_new_serial_number_is_accepted_by_certificate_builders() -> None:
    """RFC 5280 §4.1.2.2: positive, at most 20 octets; cryptography checks both."""
    for _ in range(20):
        x509.CertificateBuilder().serial_number(new_serial_number())
