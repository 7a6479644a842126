"""Serial numbers: 159 random bits, positive; lowercase hex out, several spellings in."""

from __future__ import annotations

import secrets

import pytest
from cryptography import x509

from app.ca.serials import SERIAL_BITS, format_serial, new_serial_number, parse_serial
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
    draws = [new_serial_number() for _ in range(200)]

    assert all(0 < s < 2**159 for s in draws), "positive and at most 20 DER octets"
    assert len(set(draws)) == len(draws), "no repeats"
    assert any(s > 2**150 for s in draws), "the high bits are random too"
    assert len({s >> 152 for s in draws}) > 10, "the top byte varies"
    assert all(s.bit_length() <= SERIAL_BITS == 159 for s in draws)


def test_new_serial_number_is_accepted_by_certificate_builders() -> None:
    """RFC 5280 §4.1.2.2: positive, at most 20 octets; cryptography checks both."""
    for _ in range(20):
        x509.CertificateBuilder().serial_number(new_serial_number())
