"""Pure ACME rules: identifiers (RFC 8555 §7.1.4, RFC 8738), the CSR's identifiers, the EAB
key's wrapping, tls-alpn-01 names and renewal-info identifiers."""

from __future__ import annotations

import pytest

from app.ca.acme.identifiers import (
    Identifier,
    identifiers_of_csr,
    parse_identifier,
    parse_identifiers,
)
from app.ca.acme.renewal_info import format_cert_id, parse_cert_id
from app.ca.acme.tlsalpn import server_name_for
from app.ca.keys import unwrap_secret, wrap_secret
from app.ca.names import RequestedNames
from app.errors import AcmeProblemError


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            {"type": "dns", "value": "WWW.Example.internal."},
            Identifier("dns", "www.example.internal"),
            id="dns/normalised",
        ),
        pytest.param(
            {"type": "dns", "value": "*.example.internal"},
            Identifier("dns", "*.example.internal"),
            id="dns/wildcard",
        ),
        pytest.param(
            {"type": "ip", "value": "2001:db8:0::1"},
            Identifier("ip", "2001:db8::1"),
            id="ip/compressed",
        ),
    ],
)
def test_identifiers_are_normalised(item: object, expected: Identifier) -> None:
    assert parse_identifier(item) == expected


@pytest.mark.parametrize(
    ("item", "acme_type"),
    [
        pytest.param({"type": "email", "value": "a@b.c"}, "unsupportedIdentifier", id="email"),
        pytest.param({"type": "dns", "value": "a..b"}, "rejectedIdentifier", id="dns/empty label"),
        pytest.param({"type": "dns", "value": "a.*.b"}, "rejectedIdentifier", id="dns/inner star"),
        pytest.param({"type": "dns", "value": "10.0.0.1"}, "rejectedIdentifier", id="dns/an ip"),
        pytest.param(
            {"type": "ip", "value": "10.0.0.0/8"}, "rejectedIdentifier", id="ip/a network"
        ),
        pytest.param({"type": "dns"}, "malformed", id="no value"),
        pytest.param("a.example", "malformed", id="not an object"),
    ],
)
def test_bad_identifiers_are_refused(item: object, acme_type: str) -> None:
    with pytest.raises(AcmeProblemError) as info:
        parse_identifier(item)
    assert info.value.acme_type == acme_type


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="empty"),
        pytest.param({}, id="object"),
        pytest.param([{"type": "dns", "value": "a.b"}] * 101, id="101"),
    ],
)
def test_identifier_lists_are_bounded(items: object) -> None:
    with pytest.raises(AcmeProblemError):
        parse_identifiers(items)


def test_duplicate_identifiers_count_once() -> None:
    item = {"type": "dns", "value": "a.example"}
    assert parse_identifiers([item, {**item, "value": "A.example"}]) == [
        Identifier("dns", "a.example")
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(
            RequestedNames("a.b", ("a.b",)), {Identifier("dns", "a.b")}, id="cn repeats a san"
        ),
        pytest.param(
            RequestedNames(None, ("a.b",), ("10.0.0.1",)),
            {Identifier("dns", "a.b"), Identifier("ip", "10.0.0.1")},
            id="dns and ip",
        ),
    ],
)
def test_identifiers_of_a_csr(names: RequestedNames, expected: set[Identifier]) -> None:
    assert identifiers_of_csr(names) == expected


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(RequestedNames("c.d", ("a.b",)), id="cn not a san"),
        pytest.param(RequestedNames(None, ("a.b",), uris=("spiffe://x/y",)), id="uri"),
    ],
)
def test_a_csr_naming_more_is_bad(names: RequestedNames) -> None:
    with pytest.raises(AcmeProblemError) as info:
        identifiers_of_csr(names)
    assert info.value.acme_type == "badCSR"


def test_the_eab_key_unwraps_only_with_its_kek_and_label() -> None:
    kek = b"k" * 32
    blob = wrap_secret(b"secret", kek=kek, label="acme-eab:a")
    assert unwrap_secret(blob, kek=kek, label="acme-eab:a") == b"secret"
    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_secret(blob, kek=b"j" * 32, label="acme-eab:a")
    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_secret(blob, kek=kek, label="acme-eab:b")


def test_tls_alpn_sni_of_an_ip_is_its_reverse_name() -> None:
    assert server_name_for("ip", "192.0.2.1") == "1.2.0.192.in-addr.arpa"
    assert server_name_for("dns", "a.example") == "a.example"


@pytest.mark.parametrize("serial", [1, 127, 128, 2**158 + 5])
def test_renewal_info_ids_round_trip(serial: int) -> None:
    parsed = parse_cert_id(format_cert_id(b"\x01\x02", serial))
    assert (parsed.key_identifier, parsed.serial_number) == (b"\x01\x02", serial)


@pytest.mark.parametrize("text", ["AQI", "AQI.", ".AQ", "AQI.gA", "AQI.A=A"])
def test_bad_renewal_info_ids(text: str) -> None:
    with pytest.raises(AcmeProblemError):
        parse_cert_id(text)
