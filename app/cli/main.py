"""`mintca`: init, serve and db here; client command groups in their own modules.

Start-up speed: `mintca --help` and every client command import only typer and the stdlib
at module level, in this module and in each command module it registers; anything heavier
(httpx, cryptography, pydantic, SQLAlchemy, FastAPI, uvicorn) is imported inside the
command that uses it. tests/cli/test_startup.py holds this; bench/cli.py measures it."""

from __future__ import annotations

from typing import Annotated

import typer

from app.ca.key_types import KEY_TYPES
from app.cli import acme, admin, audit, enroll, kek, operator, recover, renew
from app.cli.options import DataDirOption, load_settings
from app.errors import ConfigurationError

app = typer.Typer(help="MintCA: an internal certificate authority.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

app.command("enroll")(enroll.enroll)
app.command("renew")(renew.renew)
for group in operator.GROUPS:
    app.add_typer(group, name=group.info.name)
app.add_typer(admin.admin_app, name="admin")
admin.admin_app.command("recover")(recover.recover)
app.add_typer(audit.audit_app, name="audit")
app.add_typer(kek.kek_app, name="kek")
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
    offline_root: Annotated[
        bool,
        typer.Option(help="Write the root key to root-key.pem (0600), never to the database"),
    ] = False,
) -> None:
    """Create the schema, the root and issuing CAs, the mtls server certificate and the first
    admin certificate. Changes nothing on an initialised data dir."""
    from app.clock import SystemClock
    from app.services.setup import InitOptions, initialise

    settings = load_settings(data_dir)
    options = InitOptions(
        name=name,
        root_key=root_key,
        issuing_key=issuing_key,
        server_names=tuple(server_name or ("localhost", "127.0.0.1")),
        admin_name=admin_name,
        offline_root=offline_root,
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
    if report.created and offline_root:
        typer.echo(f"  root key:   {settings.data_dir / 'root-key.pem'}: move it offline now")


@app.command()
def serve(data_dir: DataDirOption = None) -> None:
    """Run the public and mtls listeners (initialising an empty data dir first)."""
    import gc

    # Start-up makes long-lived objects, not garbage: collecting while importing costs about
    # a tenth of its CPU. app.server.workers.run() turns the collector back on.
    gc.disable()
    from app.server.multiprocess import prepare_metrics_dir

    prepare_metrics_dir()  # first: before anything imports prometheus-client
    from app.server.logs import configure_logging
    from app.server.workers import run
    from app.services.keyring import check_keys
    from app.services.setup import is_initialised

    settings = load_settings(data_dir)
    configure_logging(settings)
    if settings.pkcs11_module is not None:  # a wrong PIN or no token: one line, exit 2
        from app.services.hsm import open_token

        open_token(settings)
    if not is_initialised(settings):
        init(data_dir=settings.data_dir)
    else:
        from app.db.migrate import upgrade

        check_keys(settings)  # a wrong or missing KEK stops here, with one line
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
