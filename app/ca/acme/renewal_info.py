"""ACME Renewal Information (RFC 9773): the certificate identifier and the suggested window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.ca.acme.jws import b64url_decode, b64url_encode
from app.errors import AcmeProblemError


@dataclass(frozen=True)
class CertID:
    key_identifier: bytes  # the AuthorityKeyIdentifier's keyIdentifier
    serial_number: int


def parse_cert_id(text: str) -> CertID:
    """`base64url(AKI keyIdentifier) "." base64url(serial's DER INTEGER content)` (§4.1).

    Raises:
        AcmeProblemError: malformed.
    """
    key_part, dot, serial_part = text.partition(".")
    if not dot:
        raise AcmeProblemError("malformed", "a certificate identifier is AKI.serial")
    key_id = b64url_decode(key_part, what="keyIdentifier")
    serial = b64url_decode(serial_part, what="serial")
    if not key_id or not serial or serial[0] & 0x80:
        raise AcmeProblemError("malformed", "the serial must be a positive DER INTEGER")
    return CertID(key_id, int.from_bytes(serial, "big"))


def format_cert_id(key_identifier: bytes, serial_number: int) -> str:
    serial = serial_number.to_bytes(serial_number.bit_length() // 8 + 1, "big")
    return f"{b64url_encode(key_identifier)}.{b64url_encode(serial)}"


def suggested_window(
    not_before: datetime, not_after: datetime, *, revoked: bool, now: datetime
) -> tuple[datetime, datetime]:
    """Renew between two thirds and five sixths of the lifetime (the spread keeps a fleet
    issued together from renewing together); a revoked certificate at once (§4.2: a window
    in the past)."""
    if revoked:
        return now - timedelta(hours=2), now - timedelta(hours=1)
    lifetime = not_after - not_before
    return not_before + lifetime * 2 / 3, not_before + lifetime * 5 / 6
