"""Sync runs: a run is opened before a provider read and finished with its
outcome and its ``sync.finished``/``sync.held`` activity entry.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, union_all, update
from sqlalchemy.orm import Session

from models.activity import ActivityEntry, log_activities
from models.errors import WorkspaceNotFound
from models.tables import Activity, SyncRun, Workspace, as_utc, utcnow


def open_run(
    session: Session, ws: Workspace, *, kind: str, trigger: str, forced: bool = False
) -> SyncRun:
    run = SyncRun(
        workspace_id=ws.id,
        kind=kind,
        trigger=trigger[:255],
        forced=forced,
        result="running",
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


@dataclass
class RunOutcome:
    result: str  # ok | held | failed | rate_limited | auth_broken | skipped
    added: int = 0
    removed: int = 0
    changed: int = 0
    api_calls: int = 0
    not_modified: int = 0
    error: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """A sync run as the sync use cases return it: what ``finish_run``
    recorded (or a run still ``running``). Times are UTC-aware. The edges
    turn it into JSON (webhooks/serialize.py, worker/cli/serialize.py, and
    sync/outcomes.py for the delivery outcomes the pipeline stores)."""

    id: int
    workspace_id: str
    kind: str  # full | member
    trigger: str
    result: str  # running | ok | held | failed | rate_limited | auth_broken | skipped | lost
    forced: bool
    started_at: datetime | None
    finished_at: datetime | None
    added: int
    removed: int
    changed: int
    api_calls: int
    not_modified: int
    error: str | None
    details: dict[str, Any]


def run_result(run: SyncRun) -> RunResult:
    return RunResult(
        id=run.id,
        workspace_id=run.workspace_id,
        kind=run.kind,
        trigger=run.trigger,
        result=run.result,
        forced=run.forced,
        started_at=as_utc(run.started_at),
        finished_at=as_utc(run.finished_at),
        added=run.added,
        removed=run.removed,
        changed=run.changed,
        api_calls=run.api_calls,
        not_modified=run.not_modified,
        error=run.error,
        details=dict(run.details or {}),
    )


def finish_run(session: Session, run_id: int, outcome: RunOutcome,
               activity: Sequence[ActivityEntry] = ()) -> RunResult:
    """Record how a run ended, with its ``sync.finished``/``sync.held`` entry.

    Skipped runs get no activity entry: nothing was attempted, and a
    disconnected org resynced every few hours would otherwise flood the
    change feed with no-ops.

    ``activity``: the run's own change entries not yet written (the ones
    ``apply_plan`` deferred); they are written first, in the same statement
    as the run's entry.
    """
    # One UPDATE … RETURNING, not a load and then an update.
    run = session.scalars(
        update(SyncRun).where(SyncRun.id == run_id).values(
            result=outcome.result, finished_at=utcnow(),
            added=outcome.added, removed=outcome.removed, changed=outcome.changed,
            api_calls=outcome.api_calls, not_modified=outcome.not_modified,
            error=outcome.error[:2000] if outcome.error else None,
            details=outcome.details or {},
        ).returning(SyncRun),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).one_or_none()
    if run is None:  # the workspace was deleted while we read the provider
        raise WorkspaceNotFound(f"sync run {run_id} is gone (workspace deleted)")
    entries = list(activity)
    if outcome.result != "skipped":
        action = "sync.held" if outcome.result == "held" else "sync.finished"
        entries.append(ActivityEntry(
            run.workspace_id,
            f"sync:{run.id}",
            action,
            run.kind,
            {
                "run": run.id,
                "kind": run.kind,
                "trigger": run.trigger,
                "result": run.result,
                "forced": run.forced,
                "added": run.added,
                "removed": run.removed,
                "changed": run.changed,
                "api_calls": run.api_calls,
                "not_modified": run.not_modified,
                "error": run.error,
                **(outcome.details or {}),
            },
        ))
    log_activities(session, entries)
    return run_result(run)


_MEMBER_ACTIONS = ("member.added", "member.removed", "member.role_changed")


def settled_members_since(session: Session, workspace_id: str, start_seq: int, actor: str, run_id: int) -> set[int]:
    """Provider user ids another run re-read after ours started: their entry
    is at least as fresh as our listing, which must not undo it.

    Two signs: a roster change another run committed after ours started (the
    activity sequence is commit-ordered), and a member re-read that changed
    nothing (a member who left before the store ever listed them writes no
    activity, yet our listing, read before they left, would add them back)."""
    # Both signs in one statement (UNION ALL: JSON has no equality to dedupe on).
    changes = select(literal("change").label("sign"), Activity.details.label("details")).where(
        Activity.workspace_id == workspace_id,
        Activity.seq > start_seq,
        Activity.action.in_(_MEMBER_ACTIONS),
        Activity.actor != actor,
    )
    # Member runs opened after ours (run ids are allocated at open) that
    # finished: each names the members it read.
    reads = select(literal("read"), SyncRun.details).where(
        SyncRun.workspace_id == workspace_id, SyncRun.kind == "member", SyncRun.id > run_id,
        SyncRun.result == "ok",
    )
    out: set[int] = set()
    for sign, details in session.execute(union_all(changes, reads)):
        d = details or {}
        uid = d.get("provider_user_id")
        if isinstance(uid, int):
            out.add(uid)
        ids = d.get("provider_user_ids") if sign == "read" else None
        if isinstance(ids, list):
            out.update(u for u in ids if isinstance(u, int))
    return out


def last_sync_run(session: Session, ws: Workspace) -> RunResult | None:
    run = session.scalar(
        select(SyncRun).where(SyncRun.workspace_id == ws.id, SyncRun.kind == "full")
        .order_by(SyncRun.id.desc()).limit(1)
    )
    return run_result(run) if run is not None else None
