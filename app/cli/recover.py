"""`mintca admin recover`: the break-glass path when every admin key is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.options import DataDirOption, load_settings


def recover(
    name: Annotated[str, typer.Option(help="CN of the new admin certificate")] = "admin",
    out: Annotated[
        Path | None, typer.Option(help="Directory for admin.pem and admin-key.pem (the data dir)")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Issue a fresh admin bundle directly, without the admin API. Run it on the CA host: it
    needs the database and the KEK. Audited as `cli:admin-recover`; earlier admin
    certificates stay valid (revoke them if their keys may have leaked)."""
    from app.clock import SystemClock
    from app.errors import ConfigurationError, MintCAError
    from app.services.recovery import recover_admin

    settings = load_settings(data_dir)
    target = out or settings.data_dir
    try:
        recovered = recover_admin(settings, name=name, out_dir=target, clock=SystemClock())
    except ConfigurationError:
        raise
    except MintCAError as exc:
        typer.secho(f"error: {exc.detail}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"serial     {recovered.serial}")
    typer.echo(f"wrote      {recovered.certificate_path}, {recovered.key_path}")
