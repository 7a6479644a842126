"""Log lines for `mintca serve` and every worker, uvicorn's loggers included: text, or one JSON
object per line with MINTCA_LOG_FORMAT=json. Secrets never belong in a log line; the
redaction here is the last defence, not the first (code logs token ids, never tokens)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from app.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn.access passes (client, method, path with query, HTTP version, status) as args.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_SECRETS = (
    # PEM private keys of any kind, also inside JSON strings (newlines escaped)
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"mintca_[A-Za-z0-9_\-]{16,}"),  # enrollment token secrets
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"),  # Authorization values
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One object per line: at, level, logger, message, process, and for access lines the
    request's fields; an exception's traceback goes in `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            entry.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure_logging(settings: Settings) -> None:
    """One handler on the root logger, on stderr; uvicorn's loggers propagate to it (uvicorn
    gets `log_config=None`, so it installs no handler of its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
