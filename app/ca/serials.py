"""Serial numbers: positive, at most 20 octets, 107 bits of CSPRNG output (CA/B Forum asks at
least 64) below the issuing time.

The time on top makes serials issued together neighbours in every B-tree that is keyed by them
(the certificates' primary key, the audit log's target): a commit of many certificates writes
one or two index pages instead of one random page per certificate, on SQLite and PostgreSQL
alike (README, Identifiers). The time is no secret (notBefore says it) and never decides
anything: uniqueness and unpredictability come from the random bits.
"""

from __future__ import annotations

import re
import secrets
import time

from app.errors import InvalidSerialError

SERIAL_BITS = 159
TIME_BITS = 52  # microseconds since 1970: 2**52 of them last until 2112, then they wrap
RANDOM_BITS = SERIAL_BITS - TIME_BITS
_SEPARATORS = re.compile(r"[:\s]")
_HEX = re.compile(r"[0-9a-f]{1,40}")  # fullmatch: `$` would allow a trailing newline


def new_serial_number() -> int:
    # Below 2**159 the DER INTEGER is at most 20 octets and positive (RFC 5280 §4.1.2.2).
    micros = (time.time_ns() // 1000) % (1 << TIME_BITS)
    return (micros << RANDOM_BITS | secrets.randbits(RANDOM_BITS)) or 1


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
