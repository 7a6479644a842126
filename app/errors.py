"""The domain error hierarchy. Every error knows its HTTP status; app.api.problems maps them.

MintCAError
├── InvalidRequestError           400
│   ├── MalformedCSRError
│   ├── CSRSignatureError
│   ├── UnsupportedKeyError
│   ├── ProfileViolationError
│   ├── InvalidSerialError
│   └── InvalidReasonError
├── AuthenticationError           401
│   └── TokenRejectedError
├── PermissionDeniedError         403
│   ├── NameNotAllowedError
│   ├── PeerRejectedError
│   └── TLSRequiredError
├── NotFoundError                 404
├── ConflictError                 409
│   └── OfflineKeyError           (the CA key is offline: sign locally with --root-key)
├── PayloadTooLargeError          413
├── UnsupportedMediaTypeError     415
├── RateLimitedError              429 (with Retry-After)
├── ServiceUnavailableError       503
└── ConfigurationError            500 (at start-up: a missing or wrong KEK)
"""

from __future__ import annotations


class MintCAError(Exception):
    status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequestError(MintCAError):
    status, slug, title = 400, "invalid-request", "Invalid request"


class MalformedCSRError(InvalidRequestError):
    slug, title = "malformed-csr", "Malformed certificate signing request"


class CSRSignatureError(InvalidRequestError):
    slug, title = "csr-signature", "CSR signature does not verify"


class UnsupportedKeyError(InvalidRequestError):
    slug, title = "unsupported-key", "Unsupported or weak key"


class ProfileViolationError(InvalidRequestError):
    slug, title = "profile-violation", "Request not allowed by the profile or token"


class InvalidSerialError(InvalidRequestError):
    slug, title = "invalid-serial", "Invalid serial number"


class InvalidReasonError(InvalidRequestError):
    slug, title = "invalid-reason", "Invalid revocation reason"


class AuthenticationError(MintCAError):
    status, slug, title = 401, "unauthenticated", "Authentication required"


class TokenRejectedError(AuthenticationError):
    slug, title = "token-rejected", "Enrollment token rejected"


class PermissionDeniedError(MintCAError):
    status, slug, title = 403, "forbidden", "Permission denied"


class NameNotAllowedError(PermissionDeniedError):
    slug, title = "name-not-allowed", "Name not allowed by the token"


class PeerRejectedError(PermissionDeniedError):
    slug, title = "peer-rejected", "Client certificate not accepted"


class NotFoundError(MintCAError):
    status, slug, title = 404, "not-found", "Not found"


class ConflictError(MintCAError):
    status, slug, title = 409, "conflict", "Conflict"


class OfflineKeyError(ConflictError):
    slug, title = "offline-key", "The CA key is offline"


class PayloadTooLargeError(MintCAError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaTypeError(MintCAError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ServiceUnavailableError(MintCAError):
    status, slug, title = 503, "unavailable", "Service unavailable"


class ConfigurationError(MintCAError):
    slug, title = "configuration", "MintCA is misconfigured"


class TLSRequiredError(PermissionDeniedError):
    slug, title = "tls-required", "Enrollment tokens need TLS"


class RateLimitedError(MintCAError):
    """429 (RFC 6585 §4); `retry_after` seconds go into the Retry-After header."""

    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class AcmeProblemError(MintCAError):
    """An RFC 8555 §6.7 problem: `acme_type` is the part after `urn:ietf:params:acme:error:`
    (e.g. `badNonce`), and `status` its HTTP status."""

    slug, title = "acme", "ACME request refused"

    def __init__(self, acme_type: str, detail: str, *, status: int = 400) -> None:
        super().__init__(detail)
        self.acme_type = acme_type
        self.status = status
