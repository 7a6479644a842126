"""audit chain: prev_hash and hash on every audit entry, a one-row chain head

Entries written before this revision are chained here, in id order, as if they had been
appended one after another: the chain vouches for them from the upgrade on.

Revision ID: 0004
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.models
from app.ca.audit_chain import GENESIS_HASH, ChainEntry, entry_hash

revision: str = "0004"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_audit = sa.table(
    "audit_log",
    sa.column("id", sa.Integer()),
    sa.column("at", app.db.models.UTCDateTime(timezone=True)),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("target", sa.String()),
    sa.column("details", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    last_id, last_hash = _chain_existing_rows()
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_audit_log_action", ["action"], unique=False)
        batch.create_index("ix_audit_log_target", ["target"], unique=False)
    op.bulk_insert(
        sa.table(
            "audit_chain",
            sa.column("id", sa.Integer()),
            sa.column("last_id", sa.BigInteger()),
            sa.column("last_hash", sa.String()),
        ),
        [{"id": 1, "last_id": last_id, "last_hash": last_hash}],
    )


def _chain_existing_rows() -> tuple[int, str]:
    connection = op.get_bind()
    last_id, last_hash = 0, GENESIS_HASH
    rows = connection.execute(sa.select(_audit).order_by(_audit.c.id)).all()
    for row in rows:
        entry = ChainEntry(
            id=row.id,
            at=row.at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            details=row.details,
            prev_hash=last_hash,
        )
        digest = entry_hash(entry)
        connection.execute(
            sa.update(_audit)
            .where(_audit.c.id == row.id)
            .values(prev_hash=last_hash, hash=digest)
        )
        last_id, last_hash = row.id, digest
    return last_id, last_hash


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_target")
        batch.drop_index("ix_audit_log_action")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
    op.drop_table("audit_chain")
