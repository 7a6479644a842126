"""certificates.names_text as TEXT: 300 SANs overflowed VARCHAR(8192) on PostgreSQL after the
certificate was signed (the caps on names now live in app.ca.names, checked before signing).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot ALTER a column's type, so the table is copied.
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column(
            "names_text", existing_type=sa.String(length=8192), type_=sa.Text(), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.alter_column(
            "names_text", existing_type=sa.Text(), type_=sa.String(length=8192), nullable=False
        )
