"""The activity log: one entry per change, numbered in commit order.

SPEC section 3's change feed. Every change the store makes is logged here in
the same transaction as the change itself.

Callers pass a Session; functions flush but never commit, so a caller's whole
unit of work (the change and its activity entries) is one transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.orm import Session

from models.tables import Activity, Counter, as_utc, utcnow

ACTIVITY_COUNTER = "activity"


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    workspace_id: str | None
    actor: str
    action: str
    subject: str | None = None
    details: dict[str, Any] | None = None


def _allocate_seq(session: Session, count: int) -> int:
    """Reserve ``count`` sequence numbers; returns the first.

    The UPDATE takes a row lock held until commit, so numbers are handed out
    in commit order (see models.tables.Counter).
    """
    result = session.execute(
        update(Counter)
        .where(Counter.name == ACTIVITY_COUNTER)
        .values(value=Counter.value + count)
        .returning(Counter.value)
    ).scalar_one_or_none()
    if result is None:
        session.execute(insert(Counter).values(name=ACTIVITY_COUNTER, value=0))
        return _allocate_seq(session, count)
    return int(result) - count + 1


def log_activity(
    session: Session,
    workspace_id: str | None,
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    return log_activities(session, [ActivityEntry(workspace_id, actor, action, subject, details)])[0]


def log_activities(session: Session, entries: Sequence[ActivityEntry]) -> list[int]:
    """Write many entries with one counter update and one bulk insert."""
    if not entries:
        return []
    first = _allocate_seq(session, len(entries))
    now = utcnow()
    rows = [
        {
            "seq": first + i,
            "at": now,
            "workspace_id": e.workspace_id,
            "actor": e.actor,
            "action": e.action,
            "subject": e.subject,
            "details": e.details,
        }
        for i, e in enumerate(entries)
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Activity), rows[start : start + 5000])
    return list(range(first, first + len(rows)))


def list_activity(
    session: Session, *, workspace_id: str | None = None, after: int = 0, limit: int = 100
) -> list[Activity]:
    stmt = select(Activity).where(Activity.seq > after)
    if workspace_id is not None:
        stmt = stmt.where(Activity.workspace_id == workspace_id)
    return list(session.scalars(stmt.order_by(Activity.seq).limit(limit)))


def latest_seq(session: Session) -> int:
    """The newest activity sequence number (0 while the log is empty)."""
    return int(session.scalar(select(func.max(Activity.seq))) or 0)


def activity_seqs(session: Session, actors: Sequence[str], *, after: int = 0, limit: int | None = None) -> list[int]:
    """Sequence numbers of the entries logged by ``actors`` after ``after``,
    oldest first, at most ``limit`` of them (an index range scan on
    ``ix_activity_actor_seq``)."""
    return list(session.scalars(activity_seqs_query(actors, after=after, limit=limit)))


def activity_seqs_query(actors: Sequence[str], *, after: int = 0, limit: int | None = None) -> Select[int]:
    stmt = select(Activity.seq).where(Activity.seq > after, Activity.actor.in_(list(actors))).order_by(Activity.seq)
    return stmt.limit(limit) if limit is not None else stmt


def reattribute_activity(session: Session, from_actor: str, to_actor: str) -> None:
    """Relabel every entry logged as ``from_actor`` with ``to_actor`` (an
    actor named after an id that did not exist yet when the entries were
    written: a first login's account)."""
    session.execute(update(Activity).where(Activity.actor == from_actor).values(actor=to_actor))


@dataclass(frozen=True, slots=True)
class ActivityView:
    """An activity entry as the store returns it, detached from the session;
    ``at`` is UTC-aware. The edges turn it into JSON (webhooks/serialize.py,
    worker/cli/serialize.py)."""

    seq: int
    at: datetime | None
    workspace_id: str | None
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]


def activity_view(a: Activity) -> ActivityView:
    return ActivityView(
        seq=a.seq,
        at=as_utc(a.at),
        workspace_id=a.workspace_id,
        actor=a.actor,
        action=a.action,
        subject=a.subject,
        details=a.details or {},
    )
