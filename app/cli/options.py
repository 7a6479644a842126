"""Options every command shares, and the one place settings are built for the CLI.

Light at import (typer and the stdlib): pydantic is imported when settings are built."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pydantic import ValidationError

    from app.config import Settings

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: MINTCA_DATA_DIR or ./data)"),
]
UrlOption = Annotated[str | None, typer.Option("--url", help="Base URL of the listener")]
CertOption = Annotated[Path | None, typer.Option("--cert", help="Client certificate (PEM)")]
KeyOption = Annotated[Path | None, typer.Option("--key", help="Client key (PEM)")]
CACertOption = Annotated[Path | None, typer.Option("--cacert", help="CA bundle to trust")]


def load_settings(data_dir: Path | None = None) -> Settings:
    """Raises:
    ConfigurationError: a MINTCA_* value out of its bounds, as one line (`mintca` exits 2)."""
    from pydantic import ValidationError

    from app.config import Settings
    from app.errors import ConfigurationError

    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None
    return settings.model_copy(update={"data_dir": data_dir}) if data_dir else settings


def describe_settings_error(exc: ValidationError) -> str:
    return "; ".join(
        f"MINTCA_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
