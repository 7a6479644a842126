"""OCSP over HTTP (RFC 6960 appendix A, RFC 5019 §5-6): decoding GET requests and the answer's
headers, shared by the FastAPI route and the fast path in front of it so that both send the
same bytes and headers."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from datetime import datetime
from urllib.parse import unquote

from app.api.media import OCSP_RESPONSE, http_date
from app.services.ocsp import OCSPAnswer

# RFC 5019 §6.2 lets caches keep an answer until nextUpdate; MintCA re-signs at once on
# revocation, so caches are told to come back after a few minutes.
MAX_AGE_SECONDS = 300
_STATIC_HEADERS_KEPT = 4096
_OCSP_RESPONSE = OCSP_RESPONSE.encode()

Headers = list[tuple[bytes, bytes]]
# The headers of a cacheable GET answer while max-age is the full MAX_AGE_SECONDS (nearly all
# of its life), by its DER (bytes cache their hash): a cache hit only copies them.
_static: dict[bytes, Headers] = {}


_DECODED_KEPT_CHARS = 1024  # a one-CertID request is ~150; longer ones are not memoised


def decode_get_request(encoded: str) -> bytes | None:
    """The DER of `GET /ocsp/{encoded}`: base64, URL-encoded or not (RFC 6960 §A.1); None
    when it is not base64. Short paths are memoised (a repeated GET skips the decoding)."""
    if len(encoded) <= _DECODED_KEPT_CHARS:
        return _decode_memoised(encoded)
    return _decode(encoded)


@functools.lru_cache(maxsize=4096)
def _decode_memoised(encoded: str) -> bytes | None:
    return _decode(encoded)


def _decode(encoded: str) -> bytes | None:
    text = unquote(encoded).strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def response_headers(answer: OCSPAnswer, *, now: datetime | None) -> Headers:
    """Headers in the order Starlette's Response writes them: the caching headers of a GET
    answer (`now` given) that may be cached, then Content-Length and Content-Type."""
    if now is None or not (answer.cacheable and answer.this_update and answer.next_update):
        return [(b"content-length", b"%d" % len(answer.der)), (b"content-type", _OCSP_RESPONSE)]
    remaining = int((answer.next_update - now).total_seconds())
    if remaining >= MAX_AGE_SECONDS:
        static = _static.get(answer.der)
        if static is None:
            if len(_static) >= _STATIC_HEADERS_KEPT:
                _static.clear()
            static = _static[answer.der] = _caching_headers(answer, MAX_AGE_SECONDS)
        return list(static)
    return _caching_headers(answer, max(0, remaining))


def _caching_headers(answer: OCSPAnswer, max_age: int) -> Headers:
    """RFC 5019 §6.2 headers, then Content-Length and Content-Type."""
    assert answer.this_update is not None
    assert answer.next_update is not None
    return [
        (b"cache-control", b"public, max-age=%d, no-transform, must-revalidate" % max_age),
        (b"etag", f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'.encode()),
        (b"last-modified", http_date(answer.this_update).encode()),
        (b"expires", http_date(answer.next_update).encode()),
        (b"content-length", b"%d" % len(answer.der)),
        (b"content-type", _OCSP_RESPONSE),
    ]
