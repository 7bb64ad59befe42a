"""Webhook deliveries: recorded before they are answered, drained per lane,
and kept for 30 days.

The deliveries table is the one source of truth for pending work (SPEC
section 7). Status life cycle::

    received ─▶ processing ─▶ processed | ignored | failed
       ▲   (lease)   │
       │             ├─▶ retrying (transient error; due again after a backoff)
       │             ├─▶ deferred (rate limited; due again at the reset time)
       └─────────────┘   both pending again once due; an expired lease
                         (killed worker) makes ``processing`` claimable again

A pending row carries its lane (``org_key``), ``due_at`` and, while a worker
holds it, ``leased_until`` and ``holder``. Whether a wake-up job for it exists
in Redis does not matter: the sweep wakes every lane with due or orphaned
rows.

Like models.store, functions flush and never commit: the caller owns the
transaction. No Flask, RQ or HTTP here.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from models.base import insert_for_dialect
from models.errors import DeliveryNotFound, InvalidState
from models.tables import Delivery, as_utc, utcnow

RECEIVED = "received"
PROCESSING = "processing"
RETRYING = "retrying"
DEFERRED = "deferred"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"

STATUSES = (RECEIVED, PROCESSING, RETRYING, DEFERRED, PROCESSED, IGNORED, FAILED)
# Nothing left to do for these (unless an operator replays them).
FINISHED = (PROCESSED, IGNORED)
# Pending work that is not held by anyone: claimable once due.
WAITING = (RECEIVED, RETRYING, DEFERRED)
PENDING = (*WAITING, PROCESSING)
# An operator may replay these (pending ones are simply made due now).
REPLAYABLE = (*PENDING, FAILED)
# Kept for readers of the old names.
REQUEUEABLE = REPLAYABLE


def record_delivery(
    session: Session | Connection,
    id: str,
    provider: str,
    event: str,
    action: str | None,
    payload_text: str,
    body_sha256: str,
    org_key: str | None,
    *,
    status: str = RECEIVED,
    outcome: dict[str, Any] | None = None,
    hint_user_id: int | None = None,
) -> bool:
    """Record a delivery; True when it is new, False for a duplicate.

    The duplicate check is the primary key itself, through INSERT ... ON
    CONFLICT DO NOTHING: two copies arriving at the same instant (GitHub
    redelivery racing the original, two web processes) cannot both see "not
    there yet" and both queue work, as a SELECT-then-INSERT would allow.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown delivery status {status!r}")
    now = utcnow()
    values: dict[str, Any] = {
        "id": id,
        "provider": provider,
        # Labels from the payload: PostgreSQL refuses NUL in text.
        "event": event.replace("\x00", "")[:64],
        "action": action.replace("\x00", "")[:64] if action else None,
        "body_sha256": body_sha256,
        "payload": payload_text,
        "org_key": org_key,
        "status": status,
        "attempts": 0,
        "outcome": outcome,
        "received_at": now,
        "processed_at": now if status in FINISHED else None,
        "due_at": now if status in WAITING else None,
        "hint_user_id": hint_user_id,
    }
    # One statement built once per dialect and executed with parameters (the
    # compiled form is then cached): intake runs it for every delivery.
    conn = session.connection() if isinstance(session, Session) else session
    return conn.execute(_insert_or_skip(conn.dialect.name), values).scalar_one_or_none() is not None


def status_and_lane(conn: Session | Connection, delivery_id: str) -> tuple[str, str | None] | None:
    """A recorded delivery's status and lane (the intake's duplicate path)."""
    row = conn.execute(select(Delivery.status, Delivery.org_key).where(Delivery.id == delivery_id)).one_or_none()
    return (row[0], row[1]) if row is not None else None


@functools.cache
def _insert_or_skip(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id. SQLAlchemy has no
    backend-neutral "insert or skip": it is built per dialect. RETURNING, not
    rowcount: psycopg reports -1 as the rowcount of this statement, which
    would make every duplicate look new."""
    return insert_for_dialect(dialect, Delivery).on_conflict_do_nothing(index_elements=["id"]).returning(Delivery.id)


def get_delivery(session: Session, delivery_id: str) -> Delivery:
    if "\x00" in delivery_id:  # PostgreSQL refuses NUL in text: no such id exists
        raise DeliveryNotFound("no delivery with that id")
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"no delivery {delivery_id!r}")
    return delivery


def _transition(session: Session, delivery_id: str, allowed: Iterable[str] | None, **values: Any) -> bool:
    """One conditional UPDATE: the status check and the change are atomic."""
    stmt = update(Delivery).where(Delivery.id == delivery_id)
    if allowed is not None:
        stmt = stmt.where(Delivery.status.in_(list(allowed)))
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    # Refresh a loaded copy, if the caller holds one, without expiring the
    # rest of the caller's session.
    loaded = session.identity_map.get(identity_key(Delivery, delivery_id))
    if loaded is not None:
        session.expire(loaded)
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- claims and leases


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a drain holds under its lease (payload loaded on demand)."""

    id: str
    provider: str
    event: str
    action: str | None
    attempts: int
    received_at: datetime
    hint_user_id: int | None


def _due_clause(now: datetime) -> Any:
    return or_(
        and_(Delivery.status.in_(list(WAITING)), Delivery.due_at <= now),
        # A lease that ran out: its holder died or hung; the work is orphaned.
        and_(Delivery.status == PROCESSING, Delivery.leased_until < now),
    )


def claim_due(
    session: Session, lane: str, holder: str, lease: timedelta, *, limit: int = 1000,
    now: datetime | None = None, payloads: dict[str, str] | None = None,
) -> list[Claimed]:
    """Claim the lane's due deliveries, oldest first, under ``holder``'s lease.

    Callers hold the lane's own lease (models.lanes), which serialises
    drains of one org; the row lock with SKIP LOCKED on PostgreSQL keeps a
    claim that races an operator's replay from blocking or double-claiming
    (SQLite has a single writer). With ``payloads``, the claimed rows'
    payloads are put there by the same statement (a drain needs them all).
    """
    now = now or utcnow()
    ids = (
        select(Delivery.id)
        .where(Delivery.org_key == lane, _due_clause(now))
        .order_by(Delivery.received_at, Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    stmt = (
        update(Delivery)
        .where(Delivery.id.in_(ids.scalar_subquery()))
        .values(status=PROCESSING, holder=holder, leased_until=now + lease, started_at=now,
                attempts=Delivery.attempts + 1)
        .returning(Delivery.id, Delivery.provider, Delivery.event, Delivery.action, Delivery.attempts,
                   Delivery.received_at, Delivery.hint_user_id,
                   *((Delivery.payload,) if payloads is not None else ()))
        .execution_options(synchronize_session=False)
    )
    rows = []
    for row in session.execute(stmt):
        rows.append(Claimed(*row[:7]))
        if payloads is not None:
            payloads[row[0]] = row[7]
    rows.sort(key=lambda c: (as_utc(c.received_at), c.id))
    return rows


def extend_leases(session: Session, holder: str, until: datetime) -> int:
    """Heartbeat: keep ``holder``'s claimed rows leased."""
    result = session.execute(
        update(Delivery).where(Delivery.holder == holder, Delivery.status == PROCESSING)
        .values(leased_until=until).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def payloads(session: Session, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = list(ids[i:i + 500])
        rows = session.execute(select(Delivery.id, Delivery.payload).where(Delivery.id.in_(chunk)))
        out.update({delivery_id: payload for delivery_id, payload in rows})
    return out


def _finish_many(session: Session, ids: Sequence[str], owner: str | None, **values: Any) -> int:
    """Set a result on rows this holder still holds (a row whose lease ran out
    and was claimed by another worker is that worker's now)."""
    done = 0
    for i in range(0, len(ids), 500):
        stmt = update(Delivery).where(Delivery.id.in_(list(ids[i:i + 500])))
        if owner is not None:
            stmt = stmt.where(Delivery.holder == owner, Delivery.status == PROCESSING)
        result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
        done += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return done


def finish_processed(session: Session, ids: Sequence[str], holder: str | None,
                     outcome: dict[str, Any]) -> int:
    return _finish_many(session, ids, holder, status=PROCESSED, outcome=outcome, error=None,
                        processed_at=utcnow(), leased_until=None, due_at=None)


def finish_ignored(session: Session, ids: Sequence[str], holder: str | None, reason: str,
                   **details: Any) -> int:
    return _finish_many(session, ids, holder, status=IGNORED,
                        outcome={"result": "ignored", "reason": reason, **details},
                        error=None, processed_at=utcnow(), leased_until=None, due_at=None)


def finish_failed(session: Session, ids: Sequence[str], holder: str | None, error: str) -> int:
    # Errors are stored for operators; callers pass messages, never tokens.
    return _finish_many(session, ids, holder, status=FAILED, error=error[:2000],
                        processed_at=utcnow(), leased_until=None, due_at=None)


def retry_later(session: Session, ids: Sequence[str], holder: str | None, due_at: datetime,
                error: str) -> int:
    """A transient failure: pending again at ``due_at`` (the sweep wakes it)."""
    return _finish_many(session, ids, holder, status=RETRYING, error=error[:2000], due_at=due_at,
                        leased_until=None, holder=None)


def defer(session: Session, ids: Sequence[str], holder: str | None, due_at: datetime, reason: str) -> int:
    """Rate limited: pending again at the reset time. Not a failure, and it
    does not count as an attempt."""
    return _finish_many(session, ids, holder, status=DEFERRED, due_at=due_at, leased_until=None,
                        holder=None, attempts=Delivery.attempts - 1,
                        outcome={"result": "deferred", "reason": reason, "until": due_at.isoformat()})


def release(session: Session, ids: Sequence[str], holder: str | None, due_at: datetime | None = None) -> int:
    """Give claimed rows back unprocessed (a batch stopped before them), due
    at ``due_at`` or now, without counting the claim as an attempt."""
    return _finish_many(session, ids, holder, status=RECEIVED, due_at=due_at or utcnow(),
                        leased_until=None, holder=None, attempts=Delivery.attempts - 1)


def replay(session: Session, delivery_id: str) -> str:
    """An operator's replay: a failed (or pending) delivery is due now, with
    its attempts counted afresh. Returns its lane."""
    d = get_delivery(session, delivery_id)
    if d.status not in REPLAYABLE:
        raise InvalidState(f"delivery {delivery_id!r} is already {d.status}; only unfinished or failed "
                           "deliveries are replayed")
    lane = d.org_key or f"{d.provider}:-"
    _transition(session, delivery_id, [d.status], status=RECEIVED, due_at=utcnow(), attempts=0,
                leased_until=None, holder=None, org_key=lane)
    return lane


def lanes_with_due_work(session: Session, *, now: datetime | None = None, limit: int = 1000) -> list[str]:
    """Lanes with due pending rows or rows whose lease ran out (the sweep)."""
    now = now or utcnow()
    return [lane for lane in session.scalars(
        select(Delivery.org_key).where(Delivery.org_key.is_not(None), _due_clause(now))
        .group_by(Delivery.org_key).limit(limit)
    ) if lane]


def lane_has_due_work(session: Session, lane: str, *, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return session.scalar(
        select(Delivery.id).where(Delivery.org_key == lane, _due_clause(now)).limit(1)
    ) is not None


def next_due(session: Session, lane: str) -> datetime | None:
    """When the lane's earliest waiting row is due."""
    return as_utc(session.scalar(
        select(func.min(Delivery.due_at)).where(Delivery.org_key == lane,
                                                 Delivery.status.in_(list(WAITING)))
    ))


def newest_pending(session: Session, lane: str) -> datetime | None:
    """When the lane's newest pending delivery arrived (is the burst over?)."""
    return as_utc(session.scalar(
        select(func.max(Delivery.received_at)).where(Delivery.org_key == lane,
                                                      Delivery.status.in_(list(PENDING)))
    ))


def begin(session: Session, delivery_id: str, holder: str | None = None) -> bool:
    """Take one delivery outside a lane drain (an operator's inline run, tests);
    False when it is already finished."""
    return _transition(
        session, delivery_id, [s for s in STATUSES if s not in FINISHED],
        status=PROCESSING, started_at=utcnow(), attempts=Delivery.attempts + 1, error=None, holder=holder,
    )


def mark_processed(session: Session, delivery_id: str, outcome: dict[str, Any]) -> bool:
    return _transition(session, delivery_id, None, status=PROCESSED, outcome=outcome, error=None,
                       processed_at=utcnow(), leased_until=None, due_at=None)


def mark_ignored(session: Session, delivery_id: str, reason: str, **details: Any) -> bool:
    return _transition(session, delivery_id, None, status=IGNORED,
                       outcome={"result": "ignored", "reason": reason, **details},
                       error=None, processed_at=utcnow(), leased_until=None, due_at=None)


def mark_failed(session: Session, delivery_id: str, error: str) -> bool:
    return _transition(session, delivery_id, None, status=FAILED, error=error[:2000],
                       processed_at=utcnow(), leased_until=None, due_at=None)


def list_deliveries(
    session: Session, *, status: str | Sequence[str] | None = None, provider: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    stmt = select(Delivery)
    if isinstance(status, str):
        stmt = stmt.where(Delivery.status == status)
    elif status is not None:
        stmt = stmt.where(Delivery.status.in_(list(status)))
    if provider is not None:
        stmt = stmt.where(Delivery.provider == provider)
    return list(session.scalars(stmt.order_by(Delivery.received_at.desc(), Delivery.id).limit(limit)))


def count_deliveries(session: Session, *, status: str | Sequence[str] | None = None) -> int:
    stmt = select(func.count()).select_from(Delivery)
    if isinstance(status, str):
        stmt = stmt.where(Delivery.status == status)
    elif status is not None:
        stmt = stmt.where(Delivery.status.in_(list(status)))
    return int(session.scalar(stmt) or 0)


def prune_processed(session: Session, older_than: timedelta) -> int:
    """Delete finished deliveries older than ``older_than``; failed ones are
    kept for operators to inspect and replay."""
    cutoff = utcnow() - older_than
    result = session.execute(
        delete(Delivery)
        .where(Delivery.status.in_(list(FINISHED)), Delivery.received_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery as the store returns it, detached from the session; times
    are UTC-aware, ``due_at`` only while pending and ``leased_until`` only
    while processing (None otherwise). The edges turn it into JSON
    (webhooks/serialize.py, worker/cli/serialize.py)."""

    id: str
    provider: str
    event: str
    action: str | None
    status: str
    org_key: str | None
    attempts: int
    job_id: str | None
    error: str | None
    due_at: datetime | None
    leased_until: datetime | None
    outcome: dict[str, Any]
    received_at: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    processed_at: datetime | None


def delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        id=d.id,
        provider=d.provider,
        event=d.event,
        action=d.action,
        status=d.status,
        org_key=d.org_key,
        attempts=d.attempts,
        job_id=d.job_id,
        error=d.error,
        due_at=as_utc(d.due_at) if d.status in PENDING else None,
        leased_until=as_utc(d.leased_until) if d.status == PROCESSING else None,
        outcome=d.outcome or {},
        received_at=as_utc(d.received_at),
        queued_at=as_utc(d.queued_at),
        started_at=as_utc(d.started_at),
        processed_at=as_utc(d.processed_at),
    )
