"""The token's name rule (exact names and `*.suffix` patterns) and the names read from a CSR."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from app.ca.names import (
    RequestedNames,
    check_names_allowed,
    has_control_characters,
    is_dns_name,
    is_ip,
    name_allowed,
    read_requested_names,
)
from app.errors import MalformedCSRError, NameNotAllowedError

ZONE = ["*.zone"]


@pytest.mark.parametrize(
    ("name", "patterns", "allowed"),
    [
        # *.zone: one or more labels before .zone
        pytest.param("a.zone", ZONE, True, id="wildcard/one label"),
        pytest.param("a.b.zone", ZONE, True, id="wildcard/two labels"),
        pytest.param("x-1.y-2.z.zone", ZONE, True, id="wildcard/three labels"),
        pytest.param("zone", ZONE, False, id="wildcard/not the zone itself"),
        pytest.param("xzone", ZONE, False, id="wildcard/not xzone"),
        pytest.param("zone.evil", ZONE, False, id="wildcard/not zone.evil"),
        pytest.param("a.zone.evil", ZONE, False, id="wildcard/not a.zone.evil"),
        pytest.param("a.zonex", ZONE, False, id="wildcard/not a.zonex"),
        pytest.param(".zone", ZONE, False, id="wildcard/not an empty label"),
        pytest.param("a..zone", ZONE, False, id="wildcard/not an empty inner label"),
        pytest.param("-a.zone", ZONE, False, id="wildcard/not a bad label"),
        pytest.param("a_b.zone", ZONE, False, id="wildcard/not an underscore"),
        pytest.param("a.ZONE", ["*.zone"], True, id="case/upper name"),
        pytest.param("A.B.Zone", ["*.ZONE"], True, id="case/upper pattern"),
        pytest.param("API.internal", ["api.INTERNAL"], True, id="case/exact"),
        # a wildcard name in a CSR only when listed exactly
        pytest.param("*.zone", ZONE, True, id="csr wildcard/listed exactly"),
        pytest.param("*.ZONE", ZONE, True, id="csr wildcard/listed exactly, other case"),
        pytest.param("*.a.zone", ZONE, False, id="csr wildcard/below the pattern"),
        pytest.param("*.zone", ["a.zone", "b.zone"], False, id="csr wildcard/not listed"),
        pytest.param("*.a.zone", ["*.a.zone"], True, id="csr wildcard/deeper listed exactly"),
        pytest.param("*", ZONE, False, id="csr wildcard/bare star"),
        # exact names of every kind
        pytest.param("api.internal", ["api.internal"], True, id="exact/dns"),
        pytest.param("api.internal", ["web.internal"], False, id="exact/other dns"),
        pytest.param("a.api.internal", ["api.internal"], False, id="exact/no implied subdomains"),
        pytest.param("10.0.0.1", ["10.0.0.1"], True, id="exact/ipv4"),
        pytest.param("10.0.0.2", ["10.0.0.1"], False, id="exact/other ipv4"),
        pytest.param("2001:db8::1", ["2001:db8::1"], True, id="exact/ipv6"),
        pytest.param("2001:db8::1", ["2001:DB8::1"], True, id="exact/ipv6 uppercase in token"),
        pytest.param("2001:db8::1", ["2001:db8:0:0:0:0:0:1"], True, id="exact/ipv6 full form"),
        pytest.param("10.0.0.1", ["*.0.0.1"], False, id="exact/an ip never matches a pattern"),
        pytest.param("spiffe://zone/api", ["spiffe://zone/api"], True, id="exact/uri"),
        pytest.param("spiffe://zone/web", ["spiffe://zone/api"], False, id="exact/other uri"),
        pytest.param("spiffe://a.zone", ZONE, False, id="exact/uri is no dns name"),
        pytest.param("ops@a.zone", ["ops@a.zone"], True, id="exact/email"),
        pytest.param("ops@a.zone", ZONE, False, id="exact/email is no dns name"),
        pytest.param("a.zone", [], False, id="no patterns"),
        pytest.param("a.zone", ["b.other", "*.zone"], True, id="any pattern may allow"),
    ],
)
def test_name_allowed(name: str, patterns: list[str], allowed: bool) -> None:
    assert name_allowed(name, patterns) is allowed


def test_check_names_allowed_names_the_first_refused_name() -> None:
    names = RequestedNames("a.zone", dns=("a.zone", "b.zone", "evil.example"), ips=("10.0.0.9",))

    with pytest.raises(NameNotAllowedError, match=r"evil\.example") as raised:
        check_names_allowed(names, ["*.zone", "10.0.0.9"])

    assert raised.value.status == 403


def test_check_names_allowed_checks_the_cn_too() -> None:
    with pytest.raises(NameNotAllowedError, match="Evil Corp"):
        check_names_allowed(RequestedNames("Evil Corp", dns=("a.zone",)), ZONE)
    check_names_allowed(RequestedNames("a.zone", dns=("a.zone", "b.a.zone")), ZONE)


@pytest.mark.parametrize(
    ("name", "allow_wildcard", "expected"),
    [
        pytest.param("a.zone", True, True, id="plain"),
        pytest.param("A.Zone", True, True, id="upper case"),
        pytest.param("*.zone", True, True, id="wildcard allowed"),
        pytest.param("*.zone", False, False, id="wildcard refused"),
        pytest.param("*", True, False, id="bare star"),
        pytest.param("a.*.zone", True, False, id="inner star"),
        pytest.param("a..zone", True, False, id="empty label"),
        pytest.param("-a.zone", True, False, id="leading hyphen"),
        pytest.param("a-.zone", True, False, id="trailing hyphen"),
        pytest.param("a" * 63 + ".zone", True, True, id="63-octet label"),
        pytest.param("a" * 64 + ".zone", True, False, id="64-octet label"),
        pytest.param(".".join(["a" * 50] * 5), True, False, id="longer than 253"),
        pytest.param("bücher.zone", True, False, id="not ascii (use the A-label)"),
        pytest.param("xn--bcher-kva.zone", True, True, id="A-label"),
        pytest.param("", True, False, id="empty"),
    ],
)
def test_is_dns_name(name: str, allow_wildcard: bool, expected: bool) -> None:
    assert is_dns_name(name, allow_wildcard=allow_wildcard) is expected


# --- Reading names from a CSR ---------------------------------------------------------------------


def csr(
    cn: str | None = None, sans: list[x509.GeneralName] | None = None
) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_read_requested_names_normalises() -> None:
    request = csr(
        "API.Zone",
        [
            x509.DNSName("API.Zone"),
            x509.DNSName("Web.Zone."),
            x509.IPAddress(ipaddress.ip_address("2001:db8:0:0:0:0:0:1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.UniformResourceIdentifier("spiffe://zone/api"),
            x509.RFC822Name("ops@zone"),
        ],
    )

    names = read_requested_names(request)

    assert names == RequestedNames(
        "api.zone",
        dns=("api.zone", "web.zone"),
        ips=("2001:db8::1", "10.0.0.1"),
        uris=("spiffe://zone/api",),
        emails=("ops@zone",),
    )
    assert names.all() == [
        "api.zone",
        "web.zone",
        "2001:db8::1",
        "10.0.0.1",
        "spiffe://zone/api",
        "ops@zone",
    ]


@pytest.mark.parametrize(
    ("cn", "sans", "message"),
    [
        pytest.param(None, None, "names nothing", id="no cn, no san"),
        pytest.param(
            "a.zone",
            [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))],
            "not issued",
            id="directory name san",
        ),
        pytest.param(
            "a.zone",
            [x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))],
            "not issued",
            id="registered id san",
        ),
        pytest.param(
            "a.zone",
            [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
            "networks",
            id="ip network san",
        ),
        pytest.param("a.zone", [x509.DNSName("bad_name.zone")], "not a DNS name", id="bad dns"),
        pytest.param("a.zone", [x509.DNSName("a.*.zone")], "not a DNS name", id="inner star"),
    ],
)
def test_read_requested_names_refuses(
    cn: str | None, sans: list[x509.GeneralName] | None, message: str
) -> None:
    with pytest.raises(MalformedCSRError, match=message) as raised:
        read_requested_names(csr(cn, sans))

    assert raised.value.status == 400


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(RequestedNames("a.zone"), [x509.DNSName("a.zone")], id="dns cn copied"),
        pytest.param(
            RequestedNames("10.0.0.1"),
            [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
            id="ip cn copied",
        ),
        pytest.param(RequestedNames("My Service"), [], id="other cn not copied"),
        pytest.param(
            RequestedNames("a.zone", dns=("b.zone", "a.zone")),
            [x509.DNSName("b.zone"), x509.DNSName("a.zone")],
            id="cn already a san",
        ),
        pytest.param(
            RequestedNames(None, uris=("spiffe://zone/api",), emails=("ops@zone",)),
            [x509.UniformResourceIdentifier("spiffe://zone/api"), x509.RFC822Name("ops@zone")],
            id="uri and email",
        ),
    ],
)
def test_san_entries(names: RequestedNames, expected: list[x509.GeneralName]) -> None:
    assert names.san_entries() == expected


def test_a_client_cn_is_not_copied_into_the_sans() -> None:
    assert RequestedNames("admin").san_entries(cn_is_host=False) == []
    assert RequestedNames("a.zone", dns=("b.zone",)).san_entries(cn_is_host=False) == [
        x509.DNSName("b.zone")
    ]


def test_a_name_asked_for_twice_is_certified_once() -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("a.zone"), x509.DNSName("A.zone"), x509.DNSName("b.zone")]
            ),
            critical=False,
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    names = read_requested_names(csr)
    assert names.dns == ("a.zone", "b.zone")
    assert [e.value for e in names.san_entries()] == ["a.zone", "b.zone"]


@pytest.mark.parametrize(
    "name",
    [
        "10.1.2.3",
        "255.255.255.255",
        "1.2.3.4.",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.256",
        "::1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "fe80::1%eth0",
        "1:2:3",
        "api.example.internal",
        "a.b.c.d",
        "1.2.3.x",
        "x1",
        "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits
        "1.2.3.4 ",
        "",
    ],
)
def test_is_ip_agrees_with_the_standard_parser(name: str) -> None:
    """is_ip's shortcut (no colon and no final digit: not an address) never disagrees with
    ipaddress, which decides whether a wildcard pattern may apply to a name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        expected = False
    else:
        expected = True
    assert is_ip(name) is expected


@given(st.text(alphabet=st.characters(max_codepoint=0x200, exclude_categories=("Cs",))))
def test_control_characters_are_c0_del_and_c1(name: str) -> None:
    expected = any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
    assert has_control_characters(name) is expected


@pytest.mark.parametrize(
    ("name", "found"),
    [
        pytest.param("svc.example", False, id="plain"),
        pytest.param("caf\u00e9.example", False, id="Latin-1 letter"),
        pytest.param("a\nb", True, id="newline"),
        pytest.param("\x00", True, id="NUL"),
        pytest.param("a\x7f", True, id="DEL"),
        pytest.param("a\x9fb", True, id="last C1"),
        pytest.param("a\xa0b", False, id="no-break space"),
    ],
)
def test_control_characters(name: str, found: bool) -> None:
    assert has_control_characters(name) is found
