"""`mintca audit list|verify`: the audit log over the admin API. `verify` walks the whole
chain oldest first and recomputes every hash here, trusting nothing the server concludes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from app.cli.client import Target, mtls_target, request
from app.cli.options import (
    CACertOption,
    CertOption,
    DataDirOption,
    KeyOption,
    UrlOption,
    load_settings,
)

audit_app = typer.Typer(name="audit", help="The tamper-evident audit log.", no_args_is_help=True)
PAGE_SIZE = 1000


def _admin(
    data_dir: DataDirOption, url: UrlOption, cert: CertOption, key: KeyOption, cacert: CACertOption
) -> Target:
    return mtls_target(load_settings(data_dir), url, cert, key, cacert)


def _row(entry: dict[str, Any]) -> str:
    at = entry["at"][:19]
    return f"{entry['id']:>8} {at:<20} {entry['action']:<20} {entry['target']:<42} {entry['actor']}"


@audit_app.command("list")
def audit_list(
    action: Annotated[
        str | None, typer.Option(help="Exact action, e.g. certificate.revoke")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Substring of the actor")] = None,
    target: Annotated[
        str | None, typer.Option(help="Exact target (serial, token id, CA id)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601, inclusive (no zone: UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601, exclusive (no zone: UTC)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """List audit entries, newest first."""
    filters = {"action": action, "actor": actor, "target": target, "since": since, "until": until}
    params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    target_api = _admin(data_dir, url, cert, key, cacert)
    if not as_json:
        typer.echo(f"{'ID':>8} {'AT':<20} {'ACTION':<20} {'TARGET':<42} ACTOR")
    left = limit
    while left > 0:
        params["limit"] = min(left, PAGE_SIZE)
        page = request(target_api, "GET", "/admin/audit", params=params).json()
        for entry in page["items"]:
            typer.echo(json.dumps(entry, sort_keys=True) if as_json else _row(entry))
        left -= len(page["items"])
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]


@audit_app.command("verify")
def audit_verify(
    page_size: Annotated[
        int, typer.Option(min=1, max=PAGE_SIZE, hidden=True, help="Entries per request")
    ] = PAGE_SIZE,
    data_dir: DataDirOption = None,
    url: UrlOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    cacert: CACertOption = None,
) -> None:
    """Recompute the hash chain from the first entry to the head. Exit 0 when it holds;
    otherwise print `entry <id>` (the first entry that fails) and exit 1."""
    from app.ca.audit_chain import GENESIS_HASH

    target_api = _admin(data_dir, url, cert, key, cacert)
    params: dict[str, Any] = {"after_id": 0, "limit": page_size}
    head: dict[str, Any] | None = None
    prev_hash, last_id, count = GENESIS_HASH, 0, 0
    while True:
        page = request(target_api, "GET", "/admin/audit/chain", params=params).json()
        if head is None:
            head = page["head"]
            params["up_to_id"] = head["id"]
        broken, prev_hash = _check_page(page["items"], prev_hash)
        if broken is not None:
            _broken(broken)
        if page["items"]:
            last_id = page["items"][-1]["id"]
            count += len(page["items"])
        if not page["next_cursor"]:
            break
        params["after_id"] = page["next_cursor"]
    assert head is not None
    if last_id != head["id"] or prev_hash != head["hash"]:
        _broken(head["id"])  # the newest entries are missing, or the head was changed
    typer.echo(f"audit chain holds: {count} entries, head entry {head['id']} {head['hash']}")


def _check_page(items: list[dict[str, Any]], prev_hash: str) -> tuple[int | None, str]:
    from datetime import datetime

    from app.ca.audit_chain import ChainEntry, StoredEntry, first_broken

    stored = [
        StoredEntry(
            ChainEntry(
                id=item["id"],
                at=datetime.fromisoformat(item["at"]),
                actor=item["actor"],
                action=item["action"],
                target=item["target"],
                details=item["details"],
                prev_hash=item["prev_hash"],
            ),
            item["hash"],
        )
        for item in items
    ]
    return first_broken(stored, prev_hash=prev_hash)


def _broken(entry_id: int) -> None:
    typer.echo(f"entry {entry_id}")
    typer.secho(
        f"error: the audit chain is broken at entry {entry_id} "
        "(an entry was edited, deleted or reordered)",
        err=True,
        fg=typer.colors.RED,
    )
    raise typer.Exit(1)
