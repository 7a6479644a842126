"""ACME orders list paging: an index on (account_id, created_at, id), the keyset that pages
an account's orders newest first (RFC 8555 §7.1.2.1)

Revision ID: 0012
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_acme_orders_account_created", "acme_orders", ["account_id", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_acme_orders_account_created", table_name="acme_orders")
