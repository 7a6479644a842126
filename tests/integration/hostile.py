"""Hypothesis strategies for hostile input to MintCA: malformed and oddly named CSRs (PEM,
DER, hand-encoded DER that cryptography's builders would refuse to make), OCSP requests, JSON
bodies, serials and query parameters. Used by test_fuzz_inputs.py."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import hypothesis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """`original` with a few bytes flipped, cut, inserted or duplicated (DER length fields
    and tags are where parsers break)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 16))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "repeat":
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
        else:
            del data[position:]
    return bytes(data)


def pem_armour(der: bytes, label: str) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


@st.composite
def csr_bodies(draw: st.DrawFn, valid_der: bytes) -> bytes:
    """Malformed CSRs as PEM or DER: mutated valid requests, random bytes, broken armour,
    odd labels, text around the block, many BEGIN lines."""
    kind = draw(
        st.sampled_from(
            ["mutated der", "mutated pem", "random", "armour", "names", "raw names", "junk text"]
        )
    )
    if kind == "mutated der":
        return draw(mutated(valid_der))
    if kind == "mutated pem":
        return pem_armour(draw(mutated(valid_der)), "CERTIFICATE REQUEST").encode()
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "armour":
        label = draw(
            st.sampled_from(
                ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST", "CERTIFICATE", "", "X" * 300]
            )
        )
        text = pem_armour(valid_der, label)
        cut = draw(st.integers(0, len(text)))
        return (text[:cut] + draw(st.text(max_size=64)) + text[cut:]).encode()
    if kind == "names":
        return odd_name_csr(draw)
    if kind == "raw names":
        return draw(raw_name_csrs())
    lines = draw(st.integers(1, 2000))
    return ("-----BEGIN CERTIFICATE REQUEST-----\n" * lines).encode() + draw(st.binary(max_size=64))


def odd_name_csr(draw: st.DrawFn) -> bytes:
    """A well-formed, correctly signed CSR whose names are hostile: control characters,
    long labels, IDNA oddities, wildcards in odd places."""
    name = draw(
        st.one_of(
            st.text(min_size=1, max_size=80).map(lambda t: f"{t}.internal"),
            st.from_regex(r"[a-z0-9*.\-\n]{1,70}\.internal", fullmatch=True),
        )
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
    except ValueError:
        hypothesis.reject()  # cryptography itself refuses the name: nothing to send
    return csr.public_bytes(Encoding.PEM)


@st.composite
def ocsp_requests(draw: st.DrawFn, valid_der: bytes) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "valid"]))
    if kind == "mutated":
        return draw(mutated(valid_der))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    return valid_der


def ocsp_get_paths(valid_der: bytes) -> st.SearchStrategy[str]:
    """GET /ocsp/{...}: base64 of good and bad DER (standard or URL-safe alphabet, padded or
    not, percent-encoded or not), and arbitrary path text."""
    encoded = ocsp_requests(valid_der).flatmap(
        lambda der: st.sampled_from(
            [
                base64.b64encode(der).decode(),
                base64.urlsafe_b64encode(der).decode().rstrip("="),
                quote(base64.b64encode(der).decode(), safe=""),
            ]
        )
    )
    return st.one_of(encoded, st.text(min_size=1, max_size=200).map(lambda t: quote(t, safe="/")))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=100),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)


@st.composite
def token_bodies(draw: st.DrawFn) -> Any:
    """POST /admin/tokens bodies: a valid skeleton with some fields replaced by any JSON."""
    body: dict[str, Any] = {
        "names": ["*.fuzz.internal"],
        "ttl_seconds": 600,
        "max_uses": 1,
        "max_validity_days": 30,
        "profile": "server",
    }
    for field in draw(st.sets(st.sampled_from(sorted(body)))):
        body[field] = draw(JSON_VALUES)
    return draw(st.one_of(st.just(body), JSON_VALUES))


@st.composite
def enroll_bodies(draw: st.DrawFn, valid_pem: str) -> Any:
    body: dict[str, Any] = {"csr": valid_pem, "profile": "peer", "validity_days": 5}
    for field in draw(st.sets(st.sampled_from(sorted(body)))):
        body[field] = draw(JSON_VALUES)
    return draw(st.one_of(st.just(body), JSON_VALUES))


SERIALS = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9a-fA-F:]{0,100}", fullmatch=True),
    st.integers(min_value=0, max_value=2**200).map(lambda n: f"{n:x}"),
).map(lambda s: quote(s, safe=""))

QUERY_VALUES = st.one_of(
    st.text(max_size=300),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["good", "revoked", "expired", "", "0", "-1", "1e9", "NaN", str(2**31)]),
)
QUERY_PARAMETERS = st.dictionaries(
    st.sampled_from(
        ["status", "q", "profile", "ca_id", "expiring_within_days", "cursor", "limit", "x"]
    ),
    QUERY_VALUES,
    max_size=5,
)
REVOKE_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"reason": st.sampled_from(["keyCompromise", "certificateHold", "removeFromCRL", "1"])},
        optional={"invalidity_date": st.one_of(st.text(max_size=40), JSON_VALUES)},
    ),
    JSON_VALUES,
)


# --- Hand-encoded DER: CSRs that cryptography's builders refuse to make ---------------------------

OID_COMMON_NAME = bytes.fromhex("0603550403")
OID_SUBJECT_ALT_NAME = bytes.fromhex("0603551d11")
OID_EXTENSION_REQUEST = bytes.fromhex("06092a864886f70d01090e")
OID_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
# GeneralName tags (RFC 5280 §4.2.1.6): otherName, rfc822Name, dNSName, directoryName, URI,
# iPAddress, registeredID; constructed ones are 0xA_.
GENERAL_NAME_TAGS = [0xA0, 0x81, 0x82, 0xA4, 0x86, 0x87, 0x88]
# Kept within what the names policy already bounds elsewhere (a CN of at most 64 characters;
# at most a few SANs): longer CNs and hundreds of SANs are input-limit work of their own.
CSR_KEY = ec.generate_private_key(ec.SECP256R1())


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


HOSTILE_TEXT = st.one_of(
    st.text(max_size=64),
    st.sampled_from(["x\n.internal", "x\x00.internal", "*.internal", "..internal", "-.internal"]),
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@st.composite
def raw_name_csrs(draw: st.DrawFn) -> bytes:
    """A correctly signed CSR whose CN (UTF8String, PrintableString, IA5String or BMPString
    tags over any bytes) and SANs (any GeneralName tag over hostile text or random bytes,
    e.g. a 5-byte iPAddress) are hand-encoded."""
    names = []
    if draw(st.booleans()):
        string_tag = draw(st.sampled_from([0x0C, 0x13, 0x16, 0x1E]))
        value = draw(st.one_of(HOSTILE_TEXT, st.binary(max_size=64)))
        names.append(tlv(0x31, sequence(OID_COMMON_NAME, tlv(string_tag, value))))
    subject = sequence(*names)
    general_names = draw(
        st.lists(
            st.tuples(
                st.sampled_from(GENERAL_NAME_TAGS),
                st.one_of(HOSTILE_TEXT, st.binary(max_size=40)),
            ),
            max_size=6,
        )
    )
    san = sequence(*(tlv(tag, content) for tag, content in general_names))
    extension = sequence(OID_SUBJECT_ALT_NAME, tlv(0x04, san))
    attribute = sequence(OID_EXTENSION_REQUEST, tlv(0x31, sequence(extension)))
    public_key = CSR_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    info = sequence(tlv(0x02, b"\x00"), subject, public_key, tlv(0xA0, attribute))
    signature = CSR_KEY.sign(info, ec.ECDSA(hashes.SHA256()))
    return sequence(info, sequence(OID_ECDSA_SHA256), tlv(0x03, b"\x00" + signature))
