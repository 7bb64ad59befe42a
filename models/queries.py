"""Read helpers for operators' views (status, metrics, sweep, schedules).

Additive to models.store and models.deliveries: nothing here changes state.
Every figure is computed in the database so that any number of web and
worker processes report the same numbers.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.runs import RunResult, run_result
from models.tables import Delivery, SyncRun, Workspace, as_utc, utcnow

# Buckets of the sync and delivery duration histograms (seconds).
DURATION_BUCKETS = (0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


def resyncable_workspace_ids(session: Session) -> list[str]:
    """Provider workspaces a periodic full resync should visit: connected and
    active (a suspended installation refuses our tokens anyway)."""
    return list(session.scalars(
        select(Workspace.id).where(Workspace.kind == "provider", Workspace.status == "active")
        .order_by(Workspace.id)
    ))


def provider_workspaces(session: Session) -> list[Workspace]:
    return list(session.scalars(
        select(Workspace).where(Workspace.kind == "provider").order_by(Workspace.name_lower)
    ))


def last_full_runs(session: Session) -> dict[str, RunResult]:
    """The newest full sync run of every workspace, in one query."""
    newest = (
        select(SyncRun.workspace_id, func.max(SyncRun.id).label("id"))
        .where(SyncRun.kind == "full").group_by(SyncRun.workspace_id).subquery()
    )
    runs = session.scalars(select(SyncRun).join(newest, newest.c.id == SyncRun.id))
    return {r.workspace_id: run_result(r) for r in runs}


def delivery_status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
    return {status: int(n) for status, n in rows}


def lost_deferred_deliveries(session: Session, stale_after: timedelta, *, limit: int = 500) -> list[Delivery]:
    """Deferred deliveries whose retry time passed ``stale_after`` ago and
    that are still deferred: their scheduled job was lost (Redis flushed)."""
    cutoff = utcnow() - stale_after
    out = []
    for d in session.scalars(
        select(Delivery).where(Delivery.status == "deferred").order_by(Delivery.received_at).limit(limit * 4)
    ):
        until = (d.outcome or {}).get("until")
        try:
            due = datetime.fromisoformat(until) if until else as_utc(d.started_at or d.received_at)
        except ValueError:
            due = as_utc(d.received_at)
        if due is not None and as_utc(due) <= cutoff:  # type: ignore[operator]
            out.append(d)
        if len(out) >= limit:
            break
    return out


def delivery_outcomes(session: Session) -> list[tuple[str, str, str, int]]:
    """(provider, event, status, count) over the stored deliveries."""
    rows = session.execute(
        select(Delivery.provider, Delivery.event, Delivery.status, func.count())
        .group_by(Delivery.provider, Delivery.event, Delivery.status)
    )
    return [(p, e, s, int(n)) for p, e, s, n in rows]


def sync_run_totals(session: Session) -> list[tuple[str, str, int, int, int]]:
    """(kind, result, runs, api calls, not-modified answers)."""
    rows = session.execute(
        select(SyncRun.kind, SyncRun.result, func.count(), func.coalesce(func.sum(SyncRun.api_calls), 0),
               func.coalesce(func.sum(SyncRun.not_modified), 0))
        .group_by(SyncRun.kind, SyncRun.result)
    )
    return [(k, r, int(n), int(c), int(nm)) for k, r, n, c, nm in rows]


def _seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)  # type: ignore[return-value]
    # SQLite keeps ISO text; julianday() parses it (days, fractional).
    return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)


def duration_histogram(session: Session, kind: str) -> list[tuple[str, list[int], int, float]]:
    """Histogram of finished durations, grouped by label, in one query.

    ``kind``: "sync" (sync runs by kind) or "delivery" (deliveries by
    provider, from start to processed). Returns (label, cumulative bucket
    counts, count, sum).
    """
    if kind == "sync":
        label: Any = SyncRun.kind
        seconds = _seconds_between(session, SyncRun.started_at, SyncRun.finished_at)
        where: ColumnElement[bool] = SyncRun.finished_at.is_not(None)
    else:
        label = Delivery.provider
        seconds = _seconds_between(session, Delivery.started_at, Delivery.processed_at)
        where = Delivery.started_at.is_not(None) & Delivery.processed_at.is_not(None)
    columns: list[Any] = [label, func.count(), func.coalesce(func.sum(seconds), 0.0)]
    for bound in DURATION_BUCKETS:
        columns.append(func.sum(case((seconds <= bound, 1), else_=0)))
    rows = session.execute(select(*columns).where(where).group_by(label))
    out = []
    for row in rows:
        name, count, total, *buckets = row
        out.append((str(name), [int(b or 0) for b in buckets], int(count), float(total or 0.0)))
    return out


def workspace_counts(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(Workspace.kind, Workspace.status, func.count()).group_by(Workspace.kind, Workspace.status)
    )
    return [(k, s, int(n)) for k, s, n in rows]


def max_sync_run_id(session: Session) -> int:
    return int(session.scalar(select(func.max(SyncRun.id))) or 0)


def full_runs_after(session: Session, workspace_ids: list[str], after_id: int) -> dict[str, RunResult]:
    """The newest full run of each workspace with an id above ``after_id``."""
    if not workspace_ids:
        return {}
    out: dict[str, RunResult] = {}
    for run in session.scalars(
        select(SyncRun).where(SyncRun.kind == "full", SyncRun.id > after_id,
                              SyncRun.workspace_id.in_(workspace_ids)).order_by(SyncRun.id)
    ):
        out[run.workspace_id] = run_result(run)
    return out
