"""installation checks: when each org's installation was last read, and the
ETag cache of the app's installation listing

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('installation_checked_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('app_installation_pages',
    sa.Column('url', sa.String(length=1000), nullable=False),
    sa.Column('etag', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('url', name=op.f('pk_app_installation_pages'))
    )


def downgrade() -> None:
    op.drop_table('app_installation_pages')
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_column('installation_checked_at')
