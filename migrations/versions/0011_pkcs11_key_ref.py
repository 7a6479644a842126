"""pkcs11 key reference: a CA row may name a key inside a PKCS#11 token (`cas.key_ref`)
instead of carrying a wrapped key (`key_wrapped` then NULL)

Revision ID: 0011
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cas") as batch:
        batch.add_column(sa.Column("key_ref", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cas") as batch:
        batch.drop_column("key_ref")
