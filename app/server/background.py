"""How the worker's background loops (CRL republication, ACME validation, live TLS) report a
round that failed: they retry on their own schedule, so a database outage is one warning line
per round, not a traceback every second; anything else keeps its traceback."""

from __future__ import annotations

import logging

from app.errors import ServiceUnavailableError


def report_failed_round(log: logging.Logger, what: str, exc: Exception) -> None:
    if isinstance(exc, ServiceUnavailableError):
        log.warning("%s: %s; retrying", what, exc.detail)
    else:
        log.error("%s failed; retrying", what, exc_info=exc)
