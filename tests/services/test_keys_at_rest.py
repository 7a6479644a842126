"""CA private keys at rest: only AES-GCM blobs under the KEK reach the database, bound to their
row by the label (associated data). The database is searched byte by byte for the keys."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.ca.keys import PrivateKey, generate_kek, unwrap_private_key
from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.setup import InitOptions, initialise
from tests.helpers import enroll_via_services

pytestmark = pytest.mark.db

WINDOW = 16  # bytes of a random secret that, found anywhere, mean the secret leaked
PEM_MARKER = b"PRIVATE KEY"


@dataclass(frozen=True)
class WrappedKey:
    label: str  # the associated data: the CA id, or `ocsp:<serial>` for a delegated responder
    blob: bytes


@dataclass(frozen=True)
class Secret:
    what: str  # e.g. "PKCS#8 DER of <label>"
    value: bytes
    random: bool  # random values are also searched for in 16-byte windows


def wrapped_keys(services: Services) -> list[WrappedKey]:
    with services.db.read() as session:
        cas = session.execute(text("SELECT id, key_wrapped FROM cas")).all()
        responders = session.execute(text("SELECT serial, key_wrapped FROM ocsp_responders")).all()
    return [WrappedKey(ca_id, bytes(blob)) for ca_id, blob in cas] + [
        WrappedKey(f"ocsp:{serial}", bytes(blob)) for serial, blob in responders
    ]


def _big_endian(number: int, length: int | None = None) -> bytes:
    return number.to_bytes(length or (number.bit_length() + 7) // 8, "big")


def secrets_of(label: str, key: PrivateKey) -> list[Secret]:
    """Every encoding of the key that must never be stored: PKCS#8 and traditional DER, and
    the raw private values (EC scalar, RSA primes and exponent, Ed25519 seed)."""
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    found = [Secret(f"PKCS#8 DER of {label}", pkcs8, random=False)]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        scalar = _big_endian(key.private_numbers().private_value, size)
        found.append(Secret(f"EC private scalar of {label}", scalar, random=True))
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        for name, value in (("p", numbers.p), ("q", numbers.q), ("d", numbers.d)):
            found.append(Secret(f"RSA {name} of {label}", _big_endian(value), random=True))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        found.append(Secret(f"Ed25519 seed of {label}", key.private_bytes_raw(), random=True))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        traditional = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        found.append(Secret(f"traditional DER of {label}", traditional, random=False))
    return found


def needles(secret: Secret) -> Iterator[tuple[str, bytes]]:
    """The secret as raw bytes, hex and base64; random values also in windows, so a value
    split across database pages, or stored in part, is still found."""
    value = secret.value
    yield "raw", value
    yield "hex", value.hex().encode()
    yield "HEX", value.hex().upper().encode()
    yield "base64", base64.b64encode(value)
    if secret.random:
        last = len(value) - WINDOW
        for start in sorted({*range(0, last, WINDOW // 2), last}):
            window = value[start : start + WINDOW]
            yield f"raw bytes {start}..{start + WINDOW}", window
            yield f"hex of bytes {start}..{start + WINDOW}", window.hex().encode()


def leaks(haystacks: dict[str, bytes], secrets: list[Secret]) -> list[str]:
    """One line per secret and place where any encoding of it was found."""
    found = []
    for where, haystack in haystacks.items():
        compact = re.sub(rb"\s+", b"", haystack)  # PEM and other wrapped base64
        if PEM_MARKER in haystack:
            found.append(f"a PEM {PEM_MARKER.decode()} marker in {where}")
        for secret in secrets:
            hits = [
                encoding
                for encoding, needle in needles(secret)
                if needle in haystack or (encoding == "base64" and needle in compact)
            ]
            if hits:
                shown = ", ".join(hits[:3]) + (
                    f" and {len(hits) - 3} more" if len(hits) > 3 else ""
                )
                found.append(f"the {secret.what} in {where} (as {shown})")
    return found


def stored_bytes(services: Services) -> dict[str, bytes]:
    """Everything the database holds: SQLite's files as they are on disk (after the engine
    closed, so the WAL is folded in; any leftover WAL or journal is read too), or on
    PostgreSQL every bytea and text-like column of every table."""
    url = make_url(services.settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        services.close()
        assert url.database
        database = Path(url.database)
        return {
            path.name: path.read_bytes()
            for path in sorted(database.parent.glob(f"{database.name}*"))
            if path.is_file()
        }
    haystacks: dict[str, bytes] = {}
    with services.db.read() as session:
        columns = session.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND data_type IN "
                "('bytea', 'text', 'character varying', 'character', 'json', 'jsonb')"
            )
        ).all()
        assert columns, "no columns found to search"
        for table, column, data_type in columns:
            cast = "" if data_type == "bytea" else "::text"
            values = session.execute(text(f'SELECT "{column}"{cast} FROM "{table}"')).scalars()
            haystacks[f"{table}.{column}"] = b"\n".join(
                bytes(v) if data_type == "bytea" else str(v).encode() for v in values if v
            )
    return haystacks


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(InitOptions(), id="ec-p384 root, ec-p256 issuing (default)"),
        pytest.param(InitOptions(root_key="rsa-2048", issuing_key="ed25519"), id="rsa, ed25519"),
        pytest.param(InitOptions(root_key="ed25519", issuing_key="rsa-2048"), id="ed25519, rsa"),
    ],
)
def test_no_private_key_is_stored_in_the_clear(
    settings: Settings, clock: FixedClock, options: InitOptions
) -> None:
    initialise(settings, options, clock)
    services = Services(settings, clock=clock)
    try:
        enroll_via_services(services)
        services.responders.current(services.keyring.active_issuer())  # a delegated responder
        wrapped = wrapped_keys(services)
        assert len(wrapped) == 3, f"expected root, issuing and responder keys: {wrapped}"
        secrets = []
        for item in wrapped:
            key = unwrap_private_key(item.blob, kek=services.keyring.kek, label=item.label)
            if not item.label.startswith("ocsp:"):
                signer_key = services.keyring.get(item.label).signer.public_key
                assert _spki(signer_key) == _spki(key.public_key()), (
                    f"the keyring's key for {item.label} is not the unwrapped one"
                )
            secrets.extend(secrets_of(item.label, key))

        haystacks = stored_bytes(services)
    finally:
        services.close()

    everything = b"".join(haystacks.values())
    for item in wrapped:  # the search sees the stored rows at all
        assert item.blob[:WINDOW] in everything, f"wrapped key of {item.label} not found"
    found = leaks(haystacks, secrets)
    assert not found, "private key material stored in the clear:\n" + "\n".join(found)


def _spki(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def ca_keys(services: Services) -> list[WrappedKey]:
    keys = [k for k in wrapped_keys(services) if not k.label.startswith("ocsp:")]
    assert len(keys) == 2, f"expected a root and an issuing CA: {keys}"
    return keys


Tamper = Callable[[WrappedKey, WrappedKey, bytes], tuple[bytes, bytes, str]]


def another_kek(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return key.blob, generate_kek(), key.label


def label_of_other_ca(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return key.blob, kek, other.label  # the blob moved to the other CA's row


def responder_label(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return key.blob, kek, f"ocsp:{key.label}"


def empty_label(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return key.blob, kek, ""


def flipped_ciphertext(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return key.blob[:-1] + bytes([key.blob[-1] ^ 1]), kek, key.label


def flipped_nonce(key: WrappedKey, other: WrappedKey, kek: bytes) -> tuple[bytes, bytes, str]:
    return bytes([key.blob[0] ^ 1]) + key.blob[1:], kek, key.label


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(another_kek, id="another KEK"),
        pytest.param(label_of_other_ca, id="label of the other CA"),
        pytest.param(responder_label, id="label with ocsp: prefix"),
        pytest.param(empty_label, id="empty label"),
        pytest.param(flipped_ciphertext, id="tampered ciphertext"),
        pytest.param(flipped_nonce, id="tampered nonce"),
    ],
)
def test_wrapped_key_decrypts_only_with_its_kek_and_label(
    services: Services, ca_keys: list[WrappedKey], tamper: Tamper
) -> None:
    kek = services.keyring.kek
    for key, other in zip(ca_keys, reversed(ca_keys), strict=True):
        unwrap_private_key(key.blob, kek=kek, label=key.label)  # the control: this decrypts
        blob, wrong_kek, label = tamper(key, other, kek)

        with pytest.raises(ValueError, match="cannot decrypt"):
            unwrap_private_key(blob, kek=wrong_kek, label=label)
