"""Settings from MINTCA_* environment variables and `.env`, built once and passed down."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"\s*(\d{1,12})\s*(s|m|h|d)?\s*")  # used with fullmatch, never `$`
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Parse `90s`, `15m`, `24h`, `30d` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 24h, 30d)")
        return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2] or "s"])
    except OverflowError:
        raise ValueError(f"duration too long: {value!r}") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def between(low: timedelta, high: timedelta) -> AfterValidator:
    """Bounds for a configuration duration, checked when Settings are built (at start)."""

    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            raise ValueError(
                f"must be between {format_duration(low)} and {format_duration(high)}, "
                f"not {format_duration(value)}"
            )
        return value

    return AfterValidator(check)


# A CRL must outlive the 60 s republication loop several times over, and stay short enough
# that every date it computes fits (3000000d overflowed on every publication).
CRL_VALIDITY_BOUNDS = between(timedelta(minutes=5), timedelta(days=30))
# An OCSP answer must never outlive its signer: the delegated responder certificate is
# replaced with 2 days left (app.services.responders.RENEW_BEFORE), so 2 days at most.
MAX_OCSP_VALIDITY = timedelta(days=2)
OCSP_VALIDITY_BOUNDS = between(timedelta(minutes=1), MAX_OCSP_VALIDITY)
# A client that has not sent a whole request head within this time is disconnected.
HEADER_TIMEOUT_BOUNDS = between(timedelta(seconds=1), timedelta(minutes=5))


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
    kek_previous: str | None = Field(default=None, repr=False)  # KEKs being retired
    workers: int = Field(default=1, ge=1, le=64)
    # auto: with one worker per CPU this process may run on, each worker keeps to its own CPU
    # (app.server.workers.worker_cpus; README: CPU affinity); off: the scheduler places them.
    cpu_affinity: Literal["auto", "off"] = "auto"
    crl_validity: Annotated[Duration, CRL_VALIDITY_BOUNDS] = timedelta(hours=24)
    ocsp_validity: Annotated[Duration, OCSP_VALIDITY_BOUNDS] = timedelta(hours=12)
    ocsp_signer: Literal["delegated", "ca"] = "delegated"
    log_level: str = "info"
    # Client, admin and role certificates name their caller spiffe://<trust_domain>/<profile>/<CN>
    # (README: client certificates); a SPIFFE trust domain: lowercase letters, digits, . - _
    trust_domain: str = Field(
        default="mintca.internal", pattern=r"^[a-z0-9._-]{1,255}$"
    )  # Rust regex: $ is the end
    # Tokens over plain HTTP: refused unless this is true AND the client is on loopback.
    allow_insecure_tokens: bool = False
    header_timeout: Annotated[Duration, HEADER_TIMEOUT_BOUNDS] = timedelta(seconds=10)
    # Enrollment token buckets, per process: requests per second and burst, per client address
    # and per token. Loose enough for the benchmarks (about 200 enrollments/s from one host).
    enroll_rate_per_address: float = Field(default=200.0, gt=0, le=100_000)
    enroll_burst_per_address: int = Field(default=400, ge=1, le=1_000_000)
    enroll_rate_per_token: float = Field(default=200.0, gt=0, le=100_000)
    enroll_burst_per_token: int = Field(default=400, ge=1, le=1_000_000)
    # CA keys in a PKCS#11 token (README: Keys in an HSM). The PIN is read from a file only,
    # never from the environment.
    pkcs11_module: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin_file: Path | None = None
    log_format: Literal["text", "json"] = "text"
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
