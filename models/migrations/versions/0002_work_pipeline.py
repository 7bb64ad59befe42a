"""work pipeline: deliveries carry their lane, due time and lease; work lanes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

PENDING = "status IN ('received', 'processing', 'deferred', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('holder', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('hint_user_id', sa.BigInteger(), nullable=True))
    # Work recorded under the old design: "queued" is pending now, and every
    # pending row is due at once (the next sweep wakes its lane).
    op.execute("UPDATE deliveries SET status = 'received' WHERE status = 'queued'")
    op.execute(f"UPDATE deliveries SET due_at = received_at WHERE {PENDING}")
    op.execute(f"UPDATE deliveries SET org_key = provider || ':-' WHERE org_key IS NULL AND {PENDING}")
    op.create_index('ix_deliveries_pending', 'deliveries', ['org_key', 'received_at'], unique=False,
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))

    op.create_table('work_lanes',
    sa.Column('lane', sa.String(length=128), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('full_sync_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('full_sync_force', sa.Boolean(), nullable=False),
    sa.Column('full_sync_trigger', sa.String(length=255), nullable=True),
    sa.Column('full_sync_attempts', sa.Integer(), nullable=False),
    sa.Column('hint_reads', sa.Integer(), nullable=False),
    sa.Column('last_hint_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_listing_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('lane', name=op.f('pk_work_lanes'))
    )
    with op.batch_alter_table('work_lanes', schema=None) as batch_op:
        batch_op.create_index('ix_work_lanes_full_sync_due', ['full_sync_due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('work_lanes', schema=None) as batch_op:
        batch_op.drop_index('ix_work_lanes_full_sync_due')
    op.drop_table('work_lanes')
    op.drop_index('ix_deliveries_pending', table_name='deliveries')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('hint_user_id')
        batch_op.drop_column('holder')
        batch_op.drop_column('leased_until')
        batch_op.drop_column('due_at')
