"""Retention: what the daily prune deletes besides deliveries.

Sync runs are history for status and metrics; kept forever they make every
aggregate over them (status, /metrics) grow without bound.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models.tables import SyncRun, utcnow

# Deleted per statement: one huge DELETE would hold its locks (and, on
# SQLite, the single writer) for as long as it runs.
PRUNE_BATCH = 5000


def prune_sync_runs(session: Session, older_than: timedelta, *, batch: int = PRUNE_BATCH) -> int:
    """Delete finished sync runs started more than ``older_than`` ago.

    Kept whatever their age: each workspace's newest full run (status shows
    it as the last sync, and a held one waits there for an operator) and
    runs still marked running (whoever owns them will finish them).
    """
    cutoff = utcnow() - older_than
    newest_full = (
        select(func.max(SyncRun.id)).where(SyncRun.kind == "full").group_by(SyncRun.workspace_id)
    )
    deleted = 0
    while True:
        ids = list(session.scalars(
            select(SyncRun.id)
            .where(SyncRun.started_at < cutoff, SyncRun.result != "running", SyncRun.id.not_in(newest_full))
            .order_by(SyncRun.id)
            .limit(batch)
        ))
        if not ids:
            return deleted
        session.execute(delete(SyncRun).where(SyncRun.id.in_(ids)).execution_options(synchronize_session=False))
        session.flush()
        deleted += len(ids)
