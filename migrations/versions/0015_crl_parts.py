"""crl parts: a full CRL stored as its entries in parts (`crl_parts`) and a row without them
(`crls.parts`, `crls.entries_at`, `crls.size`), so a publication stores what changed

Revision ID: 0015
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crl_parts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ca_id", sa.String(length=64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["ca_id"], ["cas.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_crl_parts_ca_id"), "crl_parts", ["ca_id"], unique=False)
    # Existing rows keep parts NULL (their DER is whole); the next publication of each CA
    # writes its entries as parts.
    with op.batch_alter_table("crls") as batch:
        batch.add_column(sa.Column("parts", sa.Text(), nullable=True))
        batch.add_column(sa.Column("entries_at", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # A CRL stored in parts cannot be served without them: going back republishes (the next
    # publication writes a whole DER), so the latest full CRL row is dropped with its parts.
    op.execute("DELETE FROM crls WHERE parts IS NOT NULL")
    with op.batch_alter_table("crls") as batch:
        batch.drop_column("size")
        batch.drop_column("entries_at")
        batch.drop_column("parts")
    op.drop_index(op.f("ix_crl_parts_ca_id"), table_name="crl_parts")
    op.drop_table("crl_parts")
