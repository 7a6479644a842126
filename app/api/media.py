"""Media types and the small encoders every route shares."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from cryptography import x509

from app.ca.issuance import pem_bundle

PROBLEM_JSON = "application/problem+json"
PEM_FILE = "application/x-pem-file"
PEM_CHAIN = "application/pem-certificate-chain"
PKIX_CERT = "application/pkix-cert"
PKIX_CRL = "application/pkix-crl"
PKCS10 = "application/pkcs10"
OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"


def pem(*certificates: x509.Certificate) -> str:
    return pem_bundle(*certificates).decode()


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
