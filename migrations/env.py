"""Alembic environment: metadata from app.db.models; the connection comes from app.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from app.config import Settings
from app.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Plain `alembic upgrade head` / `alembic revision --autogenerate` from a shell.
    url = Settings().effective_database_url
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `mintca db upgrade`")
run_migrations()
