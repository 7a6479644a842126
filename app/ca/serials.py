"""Serial numbers: 159 random bits, positive (CA/B Forum: at least 64 bits of CSPRNG output)."""

from __future__ import annotations

import re
import secrets

from app.errors import InvalidSerialError

SERIAL_BITS = 159
_SEPARATORS = re.compile(r"[:\s]")
_HEX = re.compile(r"[0-9a-f]{1,40}")  # fullmatch: `$` would allow a trailing newline


def new_serial_number() -> int:
    # Below 2**159 the DER INTEGER is at most 20 octets and positive (RFC 5280 §4.1.2.2).
    return secrets.randbits(SERIAL_BITS) or 1


def format_serial(serial_number: int) -> str:
    return format(serial_number, "x")


def parse_serial(text: str) -> int:
    """Accept lowercase, uppercase and colon-separated hex.

    Raises:
        InvalidSerialError: not a positive hex number of at most 20 octets.
    """
    cleaned = _SEPARATORS.sub("", text).lower().lstrip("0") or "0"
    if not _HEX.fullmatch(cleaned) or cleaned == "0":
        raise InvalidSerialError(f"not a serial number (hex, at most 20 octets): {text[:64]!r}")
    return int(cleaned, 16)
