"""activity subjects: one convention for roster member entries

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:45:00

member.added / member.role_changed used to name the login, member.removed
the numeric provider id. Every one now names the member's account id when
the member has an account, else ``<provider>:<numeric id>``; the login moves
into the details (SPEC section 3). Data only; no schema change.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

MEMBER_ACTIONS = ("member.added", "member.removed", "member.role_changed")
BATCH = 1000

# Table shapes as of this revision (not the models, which may move on).
activity = sa.table("activity", sa.column("seq", sa.BigInteger), sa.column("workspace_id", sa.String),
                    sa.column("action", sa.String), sa.column("subject", sa.String),
                    sa.column("details", sa.JSON))
workspaces = sa.table("workspaces", sa.column("id", sa.String), sa.column("provider", sa.String))
identities = sa.table("identities", sa.column("provider", sa.String), sa.column("provider_user_id", sa.BigInteger),
                      sa.column("user_id", sa.String))


def _rows(conn: sa.Connection, after: int) -> list[Any]:
    return list(conn.execute(
        sa.select(activity.c.seq, activity.c.action, activity.c.subject, activity.c.details, workspaces.c.provider)
        .select_from(activity.join(workspaces, workspaces.c.id == activity.c.workspace_id))
        .where(activity.c.action.in_(MEMBER_ACTIONS), activity.c.seq > after)
        .order_by(activity.c.seq).limit(BATCH)
    ))


def upgrade() -> None:
    conn = op.get_bind()
    accounts = {(p, int(uid)): user for p, uid, user in conn.execute(
        sa.select(identities.c.provider, identities.c.provider_user_id, identities.c.user_id))}
    after = 0
    while rows := _rows(conn, after):
        after = rows[-1].seq
        for row in rows:
            details = dict(row.details or {})
            uid = details.get("provider_user_id")
            if not isinstance(uid, int) or not row.provider:
                continue  # not a roster entry this migration knows how to name
            if row.action != "member.removed" and "login" not in details and row.subject is not None:
                details["login"] = row.subject  # these used to name the login
            details.setdefault("login", None)
            subject = accounts.get((row.provider, uid)) or f"{row.provider}:{uid}"
            conn.execute(activity.update().where(activity.c.seq == row.seq)
                         .values(subject=subject, details=details))


def downgrade() -> None:
    conn = op.get_bind()
    after = 0
    while rows := _rows(conn, after):
        after = rows[-1].seq
        for row in rows:
            details = dict(row.details or {})
            uid = details.get("provider_user_id")
            if not isinstance(uid, int):
                continue
            subject = str(uid) if row.action == "member.removed" else details.get("login") or row.subject
            conn.execute(activity.update().where(activity.c.seq == row.seq).values(subject=subject))
