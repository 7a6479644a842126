"""CRL entries kept encoded: certificates.crl_entry and the partial index a full CRL reads

A full CRL of a million entries is read from this index alone (serial and entry DER), so
publishing it costs a join and a signature, not a million encodings. Existing revoked
certificates get their entry here.

Revision ID: 0003
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.models
from app.ca.crl_der import REASON_BY_NAME, encode_revoked_entry

revision: str = "0003"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_certificates = sa.table(
    "certificates",
    sa.column("serial", sa.String()),
    sa.column("revoked_at", app.db.models.UTCDateTime()),
    sa.column("revocation_reason", sa.String()),
    sa.column("invalidity_date", app.db.models.UTCDateTime()),
    sa.column("crl_entry", sa.LargeBinary()),
)


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("crl_entry", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    revoked = connection.execute(
        sa.select(
            _certificates.c.serial,
            _certificates.c.revoked_at,
            _certificates.c.revocation_reason,
            _certificates.c.invalidity_date,
        ).where(_certificates.c.revoked_at.is_not(None))
    ).all()
    for serial, revoked_at, reason, invalidity_date in revoked:
        entry = encode_revoked_entry(
            int(serial, 16), revoked_at, REASON_BY_NAME.get(reason or ""), invalidity_date
        )
        connection.execute(
            sa.update(_certificates)
            .where(_certificates.c.serial == serial)
            .values(crl_entry=entry)
        )
    op.create_index(
        "ix_certificates_crl_entries",
        "certificates",
        ["ca_id", "not_after", "serial", "crl_entry"],
        unique=False,
        sqlite_where=sa.text("crl_entry IS NOT NULL"),
        postgresql_where=sa.text("crl_entry IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_certificates_crl_entries", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("crl_entry")
