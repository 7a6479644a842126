"""ACME: EAB credentials, accounts, nonces, orders, authorizations, challenges

Revision ID: 0010
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.models

revision: str = "0010"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = app.db.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "acme_eab_credentials",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("key_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("max_validity_days", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(1024), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=True, unique=True),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("thumbprint", sa.String(64), nullable=False, unique=True),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("eab_kid", sa.String(64), sa.ForeignKey("acme_eab_credentials.kid")),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
    )
    op.create_table(
        "acme_nonces",
        sa.Column("value", sa.String(64), primary_key=True),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
    )
    op.create_index("ix_acme_nonces_expires_at", "acme_nonces", ["expires_at"])
    op.create_table(
        "acme_orders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), sa.ForeignKey("acme_accounts.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifiers", sa.JSON(), nullable=False),
        sa.Column("not_after", UTC(timezone=True), nullable=True),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("certificate_serial", sa.String(40), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
    )
    op.create_index("ix_acme_orders_account_id", "acme_orders", ["account_id"])
    op.create_index("ix_acme_orders_certificate_serial", "acme_orders", ["certificate_serial"])
    op.create_table(
        "acme_authorizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("acme_orders.id"), nullable=False),
        sa.Column("identifier_type", sa.String(8), nullable=False),
        sa.Column("identifier_value", sa.String(255), nullable=False),
        sa.Column("wildcard", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", UTC(timezone=True), nullable=False),
    )
    op.create_index("ix_acme_authorizations_order_id", "acme_authorizations", ["order_id"])
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "authorization_id",
            sa.String(64),
            sa.ForeignKey("acme_authorizations.id"),
            nullable=False,
        ),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated_at", UTC(timezone=True), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("claimed_until", UTC(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_acme_challenges_authorization_id", "acme_challenges", ["authorization_id"]
    )
    op.create_index("ix_acme_challenges_status", "acme_challenges", ["status", "claimed_until"])


def downgrade() -> None:
    for table in (
        "acme_challenges",
        "acme_authorizations",
        "acme_orders",
        "acme_nonces",
        "acme_accounts",
        "acme_eab_credentials",
    ):
        op.drop_table(table)
