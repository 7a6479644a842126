"""`mintca kek rotate` (run as an operator runs it, in a subprocess) against a CA's database
and data dir: every key moves to the new KEK in one audited transaction, the old KEK unwraps
nothing afterwards, a process that started before keeps working, and an interrupted rotation
can be run again."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.ca.acme.jws import b64url_encode
from app.ca.keys import (
    encode_kek,
    generate_kek,
    kek_id,
    parse_kek,
    unwrap_private_key,
    unwrap_secret,
    wrapped_kek_id,
)
from app.config import Settings
from app.db.models import AcmeEabRecord, AuditRecord, CARecord, ResponderRecord
from app.services import keyring as keyring_module
from app.services.container import Services

PROCESS_TIMEOUT = 120


@pytest.fixture
def file_settings(initialised_settings: Settings) -> Settings:
    """The initialised CA with its KEK in the data dir's `kek` file (mode 0600), not in
    MINTCA_KEK: the default deployment, where `kek rotate` replaces the file."""
    assert initialised_settings.kek
    path = initialised_settings.data_dir / "kek"
    path.write_text(initialised_settings.kek + "\n")
    path.chmod(0o600)
    return initialised_settings.model_copy(update={"kek": None})


@pytest.fixture
def running(file_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    """A serving process's Services, started before the rotation, with an OCSP responder for
    the issuing CA already loaded; it may re-read its KEK sources at any time."""
    monkeypatch.setattr(keyring_module, "KEK_RELOAD_INTERVAL_SECONDS", 0.0)
    services = Services(file_settings)
    services.responders.current(services.keyring.active_issuer())
    try:
        yield services
    finally:
        services.close()


def mintca(
    settings: Settings, *args: str, kek: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINTCA_DATA_DIR": str(settings.data_dir),
        "MINTCA_DATABASE_URL": settings.effective_database_url,
        **({"MINTCA_KEK": kek} if kek else {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def wrapped_blobs(services: Services) -> dict[str, bytes]:
    with services.db.read() as session:
        cas = {ca.id: ca.key_wrapped for ca in session.scalars(select(CARecord))}
        responders = {
            f"ocsp:{r.serial}": r.key_wrapped for r in session.scalars(select(ResponderRecord))
        }
    return {**cas, **responders}


def audit_entries(services: Services, action: str) -> list[AuditRecord]:
    with services.db.read() as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.action == action)))


def test_rotate_rewraps_every_key_and_the_old_kek_unwraps_nothing(
    file_settings: Settings, running: Services
) -> None:
    old_kek = running.keyring.kek
    credential = running.acme.accounts.create_credential(
        names=["*.internal"], profile=None, max_validity_days=None, actor="test"
    )
    before = wrapped_blobs(running)

    result = mintca(file_settings, "kek", "rotate")

    assert result.returncode == 0, result.stderr
    kek_file = file_settings.data_dir / "kek"
    new_kek = parse_kek(kek_file.read_text())
    assert new_kek != old_kek
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
    assert not (file_settings.data_dir / "kek.previous").exists(), "old KEKs are not kept"
    assert [p.name for p in file_settings.data_dir.iterdir() if p.name.startswith(".kek")] == []
    assert f"under KEK {kek_id(new_kek)}" in result.stdout, result.stdout
    after = wrapped_blobs(running)
    assert after.keys() == before.keys()
    assert len([label for label in after if label.startswith("ocsp:")]) == 1
    for label, blob in after.items():
        assert wrapped_kek_id(blob) == kek_id(new_kek), label
        with pytest.raises(ValueError, match="cannot decrypt"):
            unwrap_private_key(blob, kek=old_kek, label=label)
        assert (
            unwrap_private_key(blob, kek=new_kek, label=label).public_key()
            == unwrap_private_key(before[label], kek=old_kek, label=label).public_key()
        ), f"{label}: the key itself is unchanged"
    (entry,) = audit_entries(running, "kek.rotate")
    assert entry.target == kek_id(new_kek)
    assert entry.actor == "mintca kek rotate"
    assert entry.details == {
        "previous": [kek_id(old_kek)],
        "cas": 2,
        "responders": 1,
        "acme_eab_credentials": 1,
    }
    label = f"acme-eab:{credential.kid}"
    with running.db.read() as session:
        eab_blob = session.get(AcmeEabRecord, credential.kid).key_wrapped
    assert wrapped_kek_id(eab_blob) == kek_id(new_kek)
    with pytest.raises(ValueError, match="cannot decrypt"):
        unwrap_secret(eab_blob, kek=old_kek, label=label)
    assert b64url_encode(unwrap_secret(eab_blob, kek=new_kek, label=label)) == credential.hmac_key


def test_a_process_started_before_the_rotation_follows_it(
    file_settings: Settings, running: Services
) -> None:
    assert mintca(file_settings, "kek", "rotate").returncode == 0
    new_kek = parse_kek((file_settings.data_dir / "kek").read_text())

    # It issues the root's responder now: the key is wrapped under the new KEK, which it
    # read from the KEK file when the CA row named a KEK it did not hold.
    running.responders.current(running.keyring.root())
    running.keyring.load()  # unwraps every CA key again, all under the new KEK
    fresh = Services(file_settings)
    try:
        fresh.responders.current(fresh.keyring.root())  # loads the row the first one wrote
    finally:
        fresh.close()

    assert running.keyring.kek == new_kek
    blobs = wrapped_blobs(running)
    assert len(blobs) == 4, blobs.keys()
    assert {wrapped_kek_id(b) for b in blobs.values()} == {kek_id(new_kek)}


def test_an_interrupted_rotation_can_be_run_again(file_settings: Settings) -> None:
    # The state a crash leaves between writing the KEK files and committing the re-wrap:
    # the old KEK in kek.previous, a new one in kek, every key still under the old one.
    old = (file_settings.data_dir / "kek").read_text()
    (file_settings.data_dir / "kek.previous").write_text(old)
    (file_settings.data_dir / "kek").write_text(encode_kek(generate_kek()) + "\n")
    serving = Services(file_settings)  # a process starting now still unwraps everything
    serving.close()

    result = mintca(file_settings, "kek", "rotate")

    assert result.returncode == 0, result.stderr
    newest = parse_kek((file_settings.data_dir / "kek").read_text())
    check = Services(file_settings)
    try:
        assert {wrapped_kek_id(b) for b in wrapped_blobs(check).values()} == {kek_id(newest)}
    finally:
        check.close()
    assert not (file_settings.data_dir / "kek.previous").exists()


@pytest.mark.slow  # three CLI processes
def test_with_mintca_kek_the_new_kek_goes_to_a_file_of_its_own(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    kek = initialised_settings.kek
    assert kek
    refused = mintca(initialised_settings, "kek", "rotate", kek=kek)
    new_file = tmp_path / "secrets" / "new.kek"

    result = mintca(initialised_settings, "kek", "rotate", "--new-kek-file", str(new_file), kek=kek)

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: the KEK comes from MINTCA_KEK, which this command cannot change: pass "
        "--new-kek-file (see README, Rotating the KEK)"
    ]
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    new_kek = parse_kek(new_file.read_text())
    assert str(new_file) in result.stdout
    # The replicas then run with MINTCA_KEK=<new> (the old one as MINTCA_KEK_PREVIOUS until
    # every one restarted); with the new one alone everything unwraps.
    settings = initialised_settings.model_copy(update={"kek": encode_kek(new_kek)})
    services = Services(settings)
    try:
        assert {wrapped_kek_id(b) for b in wrapped_blobs(services).values()} == {kek_id(new_kek)}
    finally:
        services.close()
    # A second run with the same file uses the KEK already in it (nothing to do but re-wrap).
    again = mintca(initialised_settings, "kek", "rotate", "--new-kek-file", str(new_file), kek=kek)
    assert again.returncode == 0, again.stderr
    assert parse_kek(new_file.read_text()) == new_kek
