"""activity: an index on (actor, seq)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 20:45:00

A drain that serves hints with a sync records, in each delivery's outcome,
the change-feed entries that sync wrote: ``activity_seqs`` by the run's
actor, oldest first. With no index on the actor, PostgreSQL walked the whole
activity log in sequence order to find them, once per drain; the log only
grows. (A plain CREATE INDEX: it holds writes to ``activity`` while it is
built, seconds for millions of rows.)
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("activity") as batch:
        batch.create_index("ix_activity_actor_seq", ["actor", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("activity") as batch:
        batch.drop_index("ix_activity_actor_seq")
