"""crl der uncompressed: on PostgreSQL, CRL DER (crls.der, crl_parts.der) is stored out of line
without compression (STORAGE EXTERNAL). DER of serials and signatures compresses poorly, and
pglz cost 4 of the 6 ms of inserting a 600 KB delta CRL under the CA's lock (and again on
every read of a CRL's parts). Rows keep the storage they were written with; SQLite has no
such setting.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("crls", "der"), ("crl_parts", "der"))


def _set_storage(storage: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {storage}")


def upgrade() -> None:
    _set_storage("EXTERNAL")


def downgrade() -> None:
    _set_storage("EXTENDED")  # PostgreSQL's default for bytea
