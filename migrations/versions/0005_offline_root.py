"""offline root: a CA row may carry no key (`key_wrapped` NULL) when its key lives in a file
the operator keeps offline (`mintca init --offline-root`)

Revision ID: 0005
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cas") as batch:
        batch.alter_column("key_wrapped", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # A database with an offline root cannot go back: there is no key to put in the column.
    with op.batch_alter_table("cas") as batch:
        batch.alter_column("key_wrapped", existing_type=sa.LargeBinary(), nullable=False)
