"""Work lanes: one per org (and one for GitLab's user events).

A lane's lease serialises everything that changes one org's roster from the
work pipeline — draining its deliveries, a full sync — across any number of
workers, and expires when its holder dies, so a killed worker blocks the org
for one lease period at most. A lane also holds the full sync it is owed as
a due time: a second trigger joins the first (earliest due time wins, a
forced trigger makes it forced), and a request survives Redis being flushed.

Functions flush and never commit: the caller owns the transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from models.base import dialect_insert
from models.tables import RosterEntry, WorkLane, Workspace, as_utc, utcnow
from models.workspaces import WorkspaceState

# Deliveries that name no single org (GitLab user_rename / user_destroy).
GITLAB_USERS_LANE = "gitlab:users"


def lane_of(provider: str, org_id: int | None) -> str:
    return f"{provider}:{org_id}" if org_id is not None else f"{provider}:-"


def lane_of_workspace(ws: Workspace) -> str:
    return lane_of(ws.provider or "-", ws.provider_org_id)


def parse_lane(lane: str) -> tuple[str, int | None]:
    """("github", 123) for "github:123"; (provider, None) for special lanes."""
    provider, _, rest = lane.partition(":")
    return provider, int(rest) if rest.isdigit() else None


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return dialect_insert(session, WorkLane)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lane's lease, taken; with the full sync the lane is owed, if any
    (so the holder need not look it up)."""

    full_sync_due_at: datetime | None

    def full_sync_due(self, now: datetime | None = None) -> bool:
        due = as_utc(self.full_sync_due_at)
        return due is not None and due <= (now or utcnow())


def acquire(session: Session, lane: str, holder: str, lease: timedelta, *,
            now: datetime | None = None) -> Lease | None:
    """Take the lane's lease if nobody holds it (or it ran out); one atomic
    statement, so two workers can never both succeed. None when another
    holder has it."""
    now = now or utcnow()
    ins = _insert(session).values(lane=lane, holder=holder, leased_until=now + lease, full_sync_force=False,
                                  full_sync_attempts=0, hint_reads=0, updated_at=now)
    stmt = ins.on_conflict_do_update(
        index_elements=["lane"],
        set_={"holder": holder, "leased_until": now + lease, "updated_at": now},
        where=or_(WorkLane.leased_until.is_(None), WorkLane.leased_until < now, WorkLane.holder == holder),
    ).returning(WorkLane.lane, WorkLane.full_sync_due_at)
    row = session.execute(stmt).one_or_none()
    return Lease(row[1]) if row is not None else None


def extend(session: Session, lane: str, holder: str, until: datetime) -> bool:
    """Heartbeat; False when the lease was lost (it ran out and was taken)."""
    result = session.execute(
        update(WorkLane).where(WorkLane.lane == lane, WorkLane.holder == holder)
        .values(leased_until=until).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, lane: str, holder: str) -> Lease | None:
    """Let the lane go. Returns what the lease said when it was let go (is a
    full sync owed?), or None when ``holder`` no longer held it."""
    row = session.execute(
        update(WorkLane).where(WorkLane.lane == lane, WorkLane.holder == holder)
        .values(leased_until=None, holder=None).returning(WorkLane.full_sync_due_at)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    return Lease(row[0]) if row is not None else None


def get(session: Session, lane: str) -> WorkLane | None:
    return session.get(WorkLane, lane, populate_existing=True)


# --------------------------------------------------------------------------- full sync requests


def request_full_sync(
    session: Session, lane: str, *, trigger: str, force: bool = False, due_at: datetime | None = None,
) -> None:
    """Owe the lane a full sync. A request already waiting absorbs this one:
    the earlier due time wins and a forced trigger makes it forced."""
    now = utcnow()
    due = due_at or now
    ins = _insert(session).values(lane=lane, full_sync_due_at=due, full_sync_force=force,
                                  full_sync_trigger=trigger[:255], full_sync_attempts=0, hint_reads=0,
                                  updated_at=now)
    excluded = ins.excluded
    session.execute(ins.on_conflict_do_update(
        index_elements=["lane"],
        set_={
            "full_sync_due_at": _earliest(WorkLane.full_sync_due_at, excluded.full_sync_due_at),
            "full_sync_force": WorkLane.full_sync_force | excluded.full_sync_force,
            "full_sync_trigger": _coalesce_trigger(WorkLane.full_sync_due_at, WorkLane.full_sync_trigger,
                                                   excluded.full_sync_trigger),
            "updated_at": now,
        },
    ))


def _earliest(current, new):  # type: ignore[no-untyped-def]
    return case((current.is_(None), new), (new < current, new), else_=current)


def _coalesce_trigger(current_due, current, new):  # type: ignore[no-untyped-def]
    # The first trigger names the request; later ones join it.
    return case((current_due.is_(None), new), else_=current)


@dataclass(frozen=True, slots=True)
class FullSyncRequest:
    trigger: str
    force: bool
    attempts: int


def take_full_sync(session: Session, lane: str, *, now: datetime | None = None) -> FullSyncRequest | None:
    """Take the lane's due full sync request (the caller holds the lease).

    Cleared before the sync reads anything: a trigger that arrives while the
    sync runs owes the org another one, since this one may have read the
    roster before the change.
    """
    now = now or utcnow()
    row = session.get(WorkLane, lane, populate_existing=True)
    if row is None or row.full_sync_due_at is None or as_utc(row.full_sync_due_at) > now:  # type: ignore[operator]
        return None
    req = FullSyncRequest(row.full_sync_trigger or "schedule", bool(row.full_sync_force),
                          int(row.full_sync_attempts or 0))
    row.full_sync_due_at = None
    row.full_sync_force = False
    row.full_sync_trigger = None
    session.flush()
    return req


def reschedule_full_sync(session: Session, lane: str, req: FullSyncRequest, due_at: datetime,
                         *, count_attempt: bool) -> None:
    """Put a full sync back (rate limited, or a transient error's backoff)."""
    request_full_sync(session, lane, trigger=req.trigger, force=req.force, due_at=due_at)
    row = session.get(WorkLane, lane, populate_existing=True)
    if row is not None:
        row.full_sync_attempts = (req.attempts + 1) if count_attempt else req.attempts
        session.flush()


def full_sync_succeeded(session: Session, lane: str) -> None:
    session.execute(update(WorkLane).where(WorkLane.lane == lane).values(full_sync_attempts=0)
                    .execution_options(synchronize_session=False))


def lanes_with_due_full_sync(session: Session, *, now: datetime | None = None, limit: int = 1000) -> list[str]:
    now = now or utcnow()
    return list(session.scalars(
        select(WorkLane.lane).where(
            WorkLane.full_sync_due_at <= now,
            or_(WorkLane.leased_until.is_(None), WorkLane.leased_until < now),
        ).order_by(WorkLane.full_sync_due_at).limit(limit)
    ))


def lane_is_free(session: Session, lane: str, *, now: datetime | None = None) -> bool:
    now = now or utcnow()
    row = session.get(WorkLane, lane, populate_existing=True)
    return row is None or row.leased_until is None or as_utc(row.leased_until) < now  # type: ignore[operator]


def count_owed_full_syncs(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(WorkLane)
                              .where(WorkLane.full_sync_due_at.is_not(None))) or 0)


def pending_full_syncs(session: Session, lanes_: list[str]) -> dict[str, datetime]:
    if not lanes_:
        return {}
    rows = session.execute(select(WorkLane.lane, WorkLane.full_sync_due_at).where(
        WorkLane.lane.in_(lanes_), WorkLane.full_sync_due_at.is_not(None)))
    return {lane: as_utc(due) for lane, due in rows if due is not None}  # type: ignore[misc]


# --------------------------------------------------------------------------- the burst budget


@dataclass(frozen=True, slots=True)
class HintBudget:
    reads: int  # single member reads spent on the current burst
    last_listing_at: datetime | None
    listings: int = 0  # full listings taken in the current burst


def _recent(last_hint_at: datetime | None, now: datetime, quiet: timedelta) -> bool:
    last = as_utc(last_hint_at)
    return last is not None and now - last <= quiet


def _budget(row: WorkLane | Any | None, now: datetime, quiet: timedelta) -> HintBudget:
    """The current burst's budget from a lane row (or a row with its columns)."""
    if row is None:
        return HintBudget(0, None)
    if not _recent(row.last_hint_at, now, quiet):
        return HintBudget(0, as_utc(row.last_listing_at))
    return HintBudget(int(row.hint_reads or 0), as_utc(row.last_listing_at), int(row.burst_listings or 0))


def hint_budget(session: Session, lane: str, *, quiet: timedelta, now: datetime | None = None) -> HintBudget:
    """Single reads and listings spent on the lane's current burst. A lane
    that has been quiet for ``quiet`` starts a new burst with a fresh budget."""
    return _budget(session.get(WorkLane, lane, populate_existing=True), now or utcnow(), quiet)


@dataclass(frozen=True, slots=True)
class HintState:
    """What a drain needs before it merges hints: the org's workspace, how
    many members it stores (what a listing costs) and the lane's budget."""

    workspace: WorkspaceState
    roster_count: int
    budget: HintBudget


def hint_state(session: Session, provider: str, org_id: int, lane: str, *, quiet: timedelta,
               now: datetime | None = None) -> HintState | None:
    """``workspace_state``, ``roster_count`` and ``hint_budget`` in one
    statement; None when the org has no workspace."""
    now = now or utcnow()
    members = (select(func.count()).select_from(RosterEntry)
               .where(RosterEntry.workspace_id == Workspace.id).scalar_subquery())
    row = session.execute(
        select(Workspace.id, Workspace.provider, Workspace.status, Workspace.installation_id,
               members.label("members"), WorkLane.lane, WorkLane.hint_reads, WorkLane.last_listing_at,
               WorkLane.burst_listings, WorkLane.last_hint_at)
        .select_from(Workspace).outerjoin(WorkLane, WorkLane.lane == lane)
        .where(Workspace.kind == "provider", Workspace.provider == provider, Workspace.provider_org_id == org_id)
    ).first()
    if row is None:
        return None
    ws = WorkspaceState(row.id, row.provider, row.status, row.installation_id)
    return HintState(ws, int(row.members or 0), _budget(row if row.lane is not None else None, now, quiet))


def _in_burst(now: datetime, quiet: timedelta):  # type: ignore[no-untyped-def]
    """SQL twin of ``_recent``: the lane heard a hint within ``quiet``."""
    return and_(WorkLane.last_hint_at.is_not(None), WorkLane.last_hint_at >= now - quiet)


def spend_reads(session: Session, lane: str, n: int, *, quiet: timedelta, now: datetime | None = None) -> None:
    """``n`` single reads were spent on the lane's burst (one UPDATE)."""
    now = now or utcnow()
    same = _in_burst(now, quiet)
    session.execute(
        update(WorkLane).where(WorkLane.lane == lane).values(
            hint_reads=case((same, func.coalesce(WorkLane.hint_reads, 0) + n), else_=n),
            burst_listings=case((same, WorkLane.burst_listings), else_=0),
            last_hint_at=now,
        ).execution_options(synchronize_session=False)
    )


def listed(session: Session, lane: str, *, quiet: timedelta, now: datetime | None = None) -> None:
    """A full listing was read: it answers every hint received before it.

    The burst's read budget is *not* refilled: within one burst a listing
    replaces single reads, it does not buy more of them (that is what keeps
    a burst cut into many small batches within its bound). The burst's
    listings are counted (a quiet lane starts over at one). One UPDATE."""
    now = now or utcnow()
    same = _in_burst(now, quiet)
    session.execute(
        update(WorkLane).where(WorkLane.lane == lane).values(
            burst_listings=case((same, func.coalesce(WorkLane.burst_listings, 0) + 1), else_=1),
            hint_reads=case((same, WorkLane.hint_reads), else_=0),
            last_listing_at=now,
            last_hint_at=now,
        ).execution_options(synchronize_session=False)
    )


__all__ = [
    "GITLAB_USERS_LANE",
    "FullSyncRequest",
    "HintBudget",
    "acquire",
    "extend",
    "lane_of",
    "parse_lane",
    "release",
    "request_full_sync",
    "take_full_sync",
]
