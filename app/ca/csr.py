"""Loading PKCS#10 CSRs (PEM with text around it or the legacy label, or DER) and checking them."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from app.ca.keys import PublicKey, check_public_key
from app.errors import CSRSignatureError, MalformedCSRError

# GnuTLS (certtool) writes the legacy "NEW CERTIFICATE REQUEST" label. The markers are found
# one after the other, each in one linear scan: a single regex spanning BEGIN ... END retried
# from every BEGIN line and took quadratic time (0.7 s for 63 KB of BEGIN lines).
_PEM_BEGIN = re.compile(rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----")
_PEM_END = re.compile(rb"-----END (?:NEW )?CERTIFICATE REQUEST-----")


def _pem_body(raw: bytes) -> bytes | None:
    """The base64 text between the first BEGIN marker and the END marker after it."""
    begin = _PEM_BEGIN.search(raw)
    if begin is None:
        return None
    end = _PEM_END.search(raw, begin.end())
    if end is None:
        raise MalformedCSRError("the PEM block of the CSR has no END line")
    return raw[begin.end() : end.start()]


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """Parse a CSR given as PEM (text around the block is ignored) or DER.

    Raises:
        MalformedCSRError: no CSR could be read.
    """
    raw = data.encode() if isinstance(data, str) else data
    body = _pem_body(raw)
    if body is not None:
        try:
            raw = base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as exc:
            raise MalformedCSRError("the PEM block of the CSR is not valid base64") from exc
    elif b"-----BEGIN" in raw or not raw.startswith(b"\x30"):
        raise MalformedCSRError("expected a PEM 'CERTIFICATE REQUEST' block or DER PKCS#10")
    try:
        return x509.load_der_x509_csr(raw)
    except ValueError as exc:
        raise MalformedCSRError("the CSR is not valid PKCS#10 (RFC 2986)") from exc


def check_csr(csr: x509.CertificateSigningRequest) -> PublicKey:
    """Check the key policy and the proof of possession; return the subject's public key.

    Raises:
        UnsupportedKeyError: a weak or unsupported key.
        CSRSignatureError: the CSR's signature does not verify with its own key.
        MalformedCSRError: the CSR cannot be read further (e.g. broken extensions).
    """
    try:
        key = check_public_key(csr.public_key())
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise MalformedCSRError(f"the CSR's public key cannot be read: {exc}") from exc
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRSignatureError(f"the CSR's signature cannot be checked: {exc}") from exc
    if not valid:
        raise CSRSignatureError("the CSR's signature does not verify with its public key")
    try:
        _ = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedCSRError(f"the CSR's extensions cannot be read: {exc}") from exc
    return key
