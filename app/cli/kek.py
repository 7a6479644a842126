"""`mintca kek rotate`: re-wrap every CA and OCSP responder key under a new KEK. It works on
the database and the KEK file directly (a KEK never travels over the API), like `db upgrade`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.options import DataDirOption, load_settings

kek_app = typer.Typer(
    name="kek", help="The key-encryption key of CA keys at rest.", no_args_is_help=True
)
ACTOR = "mintca kek rotate"


@kek_app.command("rotate")
def kek_rotate(
    data_dir: DataDirOption = None,
    new_kek_file: Annotated[
        Path | None,
        typer.Option(
            help="Put the new KEK in this file (or use the KEK already in it) and leave the "
            "configured KEK alone: for MINTCA_KEK or a read-only secret. Default: replace "
            "the KEK file itself."
        ),
    ] = None,
) -> None:
    """Re-wrap every CA and responder key under a new KEK, in one transaction (audited)."""
    from app.ca.keys import encode_kek, generate_kek, parse_kek
    from app.clock import SystemClock
    from app.db.engine import Database
    from app.db.migrate import upgrade
    from app.errors import ConfigurationError
    from app.files import fsync_directory, write_file
    from app.services.kek import rewrap_keys
    from app.services.keyring import load_keks, previous_kek_file

    settings = load_settings(data_dir)
    keks = load_keks(settings)
    kek_file = settings.effective_kek_file
    if new_kek_file is None and settings.kek:
        raise ConfigurationError(
            "the KEK comes from MINTCA_KEK, which this command cannot change: "
            "pass --new-kek-file (see README, Rotating the KEK)"
        )
    if new_kek_file is not None and new_kek_file.exists():
        new_kek = parse_kek(new_kek_file.read_text())
    else:
        new_kek = generate_kek()
    upgrade(settings.effective_database_url)
    if new_kek_file is not None:
        new_kek_file.parent.mkdir(parents=True, exist_ok=True)
        write_file(new_kek_file, (encode_kek(new_kek) + "\n").encode())
    else:
        # Old KEKs first, where every process (and a rerun after a crash) finds them; then
        # the new one becomes current; only then the keys move to it.
        previous = previous_kek_file(settings)
        write_file(previous, "".join(encode_kek(k) + "\n" for k in keks).encode())
        write_file(kek_file, (encode_kek(new_kek) + "\n").encode())
    db = Database(settings.effective_database_url, pool_size=1)
    try:
        rotation = rewrap_keys(db, keks=keks, new_kek=new_kek, clock=SystemClock(), actor=ACTOR)
    finally:
        db.dispose()
    if new_kek_file is None:
        previous.unlink()  # nothing is wrapped under the old KEKs any more
        fsync_directory(previous.parent)
    typer.echo(
        f"re-wrapped {rotation.cas} CA keys and {rotation.responders} responder keys under "
        f"KEK {rotation.kek_id} (were: {', '.join(rotation.previous_ids) or '-'})"
    )
    if new_kek_file is not None:
        typer.echo(
            f"the new KEK is in {new_kek_file}: give it to every replica as MINTCA_KEK "
            "(see README, Rotating the KEK)"
        )
    else:
        typer.echo(f"wrote the new KEK to {kek_file}")
