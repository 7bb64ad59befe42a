"""work lanes count the listings of the current burst

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 07:30:00

Each listing a burst has already had doubles how long the next one may wait
for the burst to pause (sync.batch.listing_wait).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_lanes") as batch:
        batch.add_column(sa.Column("burst_listings", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("work_lanes") as batch:
        batch.drop_column("burst_listings")
