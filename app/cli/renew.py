"""`mintca renew`: the command's options; app/cli/renewal.py does the work, imported only when
the command runs (typer and the stdlib at import keep `mintca --help` fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.ca.key_types import KEY_TYPES
from app.cli.client import mtls_target
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)


def renew(
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write key.pem, cert.pem, chain.pem here (default: in place)"),
    ] = None,
    reuse_key: Annotated[bool, typer.Option("--reuse-key", help="Keep the current key")] = False,
    key_type: Annotated[
        str | None, typer.Option(help=f"New key: {', '.join(KEY_TYPES)} (default: as now)")
    ] = None,
    daemon: Annotated[
        bool, typer.Option("--daemon", help="Stay running; renew at 2/3 of each lifetime")
    ] = False,
    exec_command: Annotated[
        str | None, typer.Option("--exec", help="Command to run after each renewal")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="With --daemon: stop after the first renewal")
    ] = False,
) -> None:
    """Renew a certificate with itself over the mtls listener (default: the admin bundle)."""
    import random
    import time
    from datetime import UTC, datetime

    from app.cli.renewal import Renewer, run_daemon, run_exec

    if key_type is not None and key_type not in KEY_TYPES:
        raise typer.BadParameter(f"choose one of {', '.join(KEY_TYPES)}", param_hint="--key-type")
    target = mtls_target(load_settings(data_dir), url, cert, key, cacert)
    renewer = Renewer(target, out, reuse_key, key_type)
    if not daemon:
        renewer.renew()
        run_exec(exec_command)
        return
    status = run_daemon(
        renewer.renew,
        renewer.current(),
        now=lambda: datetime.now(UTC),
        sleep=time.sleep,
        rng=random.SystemRandom(),
        exec_command=exec_command,
        max_renewals=1 if once else None,
    )
    raise typer.Exit(status)
