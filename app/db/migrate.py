"""Schema upgrades with Alembic, safe when several processes start at once."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.engine import secure_sqlite_file
from app.files import create_private_file

_ROOT = Path(__file__).resolve().parents[2]
# Any constant works; it names the lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x4D494E54


def alembic_config() -> Config:
    config = Config(str(_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(_ROOT / "migrations"))
    return config


def upgrade(url: str) -> None:
    """Upgrade the schema to head. SQLite: a file lock beside the database; PostgreSQL: an
    advisory lock, so replicas starting together migrate once and the others wait."""
    config = alembic_config()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database or "mintca.db")
        database.parent.mkdir(parents=True, exist_ok=True)
        secure_sqlite_file(url)  # the first connection of a new CA is this one
        create_private_file(Path(f"{database}.lock"))
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _run(config, url)
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            connection.commit()
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
                connection.commit()
    finally:
        engine.dispose()


def _run(config: Config, url: str) -> None:
    engine = create_engine(url, connect_args={"timeout": 30})
    try:
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
