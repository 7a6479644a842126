"""OCSP over HTTP (RFC 6960 appendix A, RFC 5019 §5-6): decoding GET requests and the answer's
headers, shared by the FastAPI route and the fast path in front of it so that both send the
same bytes and headers."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from urllib.parse import unquote

from app.api.media import OCSP_RESPONSE, http_date
from app.services.ocsp import OCSPAnswer

# RFC 5019 §6.2 lets caches keep an answer until nextUpdate; MintCA re-signs at once on
# revocation, so caches are told to come back after a few minutes.
MAX_AGE_SECONDS = 300
_STATIC_HEADERS_KEPT = 4096

Headers = list[tuple[bytes, bytes]]
# (ETag, Last-Modified, Expires) of a cacheable answer, by its DER (bytes cache their hash).
_static: dict[bytes, tuple[bytes, bytes, bytes]] = {}


def decode_get_request(encoded: str) -> bytes | None:
    """The DER of `GET /ocsp/{encoded}`: base64, URL-encoded or not (RFC 6960 §A.1); None
    when it is not base64."""
    text = unquote(encoded).strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def response_headers(answer: OCSPAnswer, *, now: datetime | None) -> Headers:
    """Headers in the order Starlette's Response writes them: the caching headers of a GET
    answer (`now` given) that may be cached, then Content-Length and Content-Type."""
    headers: Headers = []
    if now is not None and answer.cacheable and answer.this_update and answer.next_update:
        static = _static.get(answer.der)
        if static is None:
            if len(_static) >= _STATIC_HEADERS_KEPT:
                _static.clear()
            static = (
                f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'.encode(),
                http_date(answer.this_update).encode(),
                http_date(answer.next_update).encode(),
            )
            _static[answer.der] = static
        remaining = int((answer.next_update - now).total_seconds())
        max_age = max(0, min(MAX_AGE_SECONDS, remaining))
        headers = [
            (
                b"cache-control",
                b"public, max-age=%d, no-transform, must-revalidate" % max_age,
            ),
            (b"etag", static[0]),
            (b"last-modified", static[1]),
            (b"expires", static[2]),
        ]
    headers.append((b"content-length", b"%d" % len(answer.der)))
    headers.append((b"content-type", OCSP_RESPONSE.encode()))
    return headers
