"""`mintca`: init, serve and db here; client command groups in their own modules."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from app.ca.keys import KEY_TYPES
from app.cli import acme, admin, enroll, operator, renew
from app.cli.options import DataDirOption, load_settings
from app.clock import SystemClock
from app.errors import ConfigurationError
from app.services.setup import InitOptions, initialise, is_initialised

app = typer.Typer(help="MintCA: an internal certificate authority.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

app.command("enroll")(enroll.enroll)
app.command("renew")(renew.renew)
for group in operator.GROUPS:
    app.add_typer(group, name=group.info.name)
app.add_typer(admin.admin_app, name="admin")
app.add_typer(acme.acme_app, name="acme")


def _check_key_type(value: str) -> str:
    if value not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}")
    return value


@app.command()
def init(
    data_dir: DataDirOption = None,
    name: Annotated[str, typer.Option(help="Organisation name in the CA subjects")] = "MintCA",
    root_key: Annotated[str, typer.Option(callback=_check_key_type)] = "ec-p384",
    issuing_key: Annotated[str, typer.Option(callback=_check_key_type)] = "ec-p256",
    server_name: Annotated[
        list[str] | None,
        typer.Option(help="DNS name or IP of the mtls listener (repeatable)"),
    ] = None,
    admin_name: Annotated[str, typer.Option(help="CN of the first admin certificate")] = "admin",
) -> None:
    """Create the schema, the root and issuing CAs, the mtls server certificate and the first
    admin certificate. Changes nothing on an initialised data dir."""
    settings = load_settings(data_dir)
    options = InitOptions(
        name=name,
        root_key=root_key,
        issuing_key=issuing_key,
        server_names=tuple(server_name or ("localhost", "127.0.0.1")),
        admin_name=admin_name,
    )
    report = initialise(settings, options, SystemClock())
    if report.created:
        typer.echo(f"Initialised MintCA in {settings.data_dir}")
    else:
        typer.echo(f"Already initialised ({settings.data_dir}); nothing changed in the database.")
    typer.echo(f"  root CA:    {report.root_ca_id}")
    typer.echo(f"  issuing CA: {report.issuing_ca_id}")
    if report.files:
        typer.echo(f"  wrote:      {', '.join(report.files)}")


@app.command()
def serve(data_dir: DataDirOption = None) -> None:
    """Run the public and mtls listeners (initialising an empty data dir first)."""
    from app.server.workers import run

    settings = load_settings(data_dir)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    if not is_initialised(settings):
        init(data_dir=settings.data_dir)
    else:
        from app.db.migrate import upgrade

        upgrade(settings.effective_database_url)
    run(settings)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOption = None) -> None:
    """Upgrade the database schema to the newest revision."""
    from app.db.migrate import upgrade

    settings = load_settings(data_dir)
    upgrade(settings.effective_database_url)
    typer.echo("Database schema is at head.")


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        typer.secho(f"error: {exc.detail}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
