"""Settings from MINTCA_* environment variables and `.env`, built once and passed down."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Parse `90s`, `15m`, `24h`, `30d` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 24h, 30d)")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2] or "s"])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {bind!r}")
    return host.strip("[]"), int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINTCA_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    public_bind: str = "0.0.0.0:8080"
    mtls_bind: str = "0.0.0.0:8443"
    public_url: str = "http://localhost:8080"
    public_tls: bool = False
    kek: str | None = Field(default=None, repr=False)
    kek_file: Path | None = None
    workers: int = Field(default=1, ge=1, le=64)
    crl_validity: Duration = timedelta(hours=24)
    ocsp_validity: Duration = timedelta(hours=12)
    ocsp_signer: Literal["delegated", "ca"] = "delegated"
    log_level: str = "info"
    # Client, admin and role certificates name their caller spiffe://<trust_domain>/<profile>/<CN>
    # (README: client certificates); a SPIFFE trust domain: lowercase letters, digits, . - _
    trust_domain: str = Field(
        default="mintca.internal", pattern=r"^[a-z0-9._-]{1,255}$"
    )  # Rust regex: $ is the end
    # ACME (SPEC: ACME on the public listener)
    acme_eab_required: bool = True
    acme_http01_port: int = Field(default=80, ge=1, le=65535)
    acme_tlsalpn01_port: int = Field(default=443, ge=1, le=65535)
    acme_dns_resolver: str | None = None  # host:port for every validation lookup

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'mintca.db'}"

    @property
    def effective_kek_file(self) -> Path:
        return self.kek_file or self.data_dir / "kek"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")
