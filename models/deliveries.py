"""Webhook deliveries: recorded before they are answered, then queued,
processed, and kept for 30 days.

Status life cycle::

    received ─▶ queued ─▶ processing ─▶ processed | ignored
       │          ▲            │
       │          └── sweep ───┤─▶ failed (retried by RQ; replayable)
       └─▶ ignored             └─▶ deferred (rate limited; rescheduled)

``received`` means recorded but not yet queued (Redis was down, or the
process died between commit and enqueue); the periodic sweep queues it.

Like models.store, functions flush and never commit: the caller owns the
transaction. No Flask, RQ or HTTP here.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from models.errors import DeliveryNotFound
from models.tables import Delivery, as_utc, utcnow

RECEIVED = "received"
QUEUED = "queued"
PROCESSING = "processing"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"
DEFERRED = "deferred"

STATUSES = (RECEIVED, QUEUED, PROCESSING, PROCESSED, IGNORED, FAILED, DEFERRED)
# Nothing left to do for these (unless an operator replays them).
FINISHED = (PROCESSED, IGNORED)
# States from which a sweep or replay may queue a delivery again.
REQUEUEABLE = (RECEIVED, QUEUED, PROCESSING, DEFERRED, FAILED)
PENDING = (RECEIVED, QUEUED, PROCESSING, DEFERRED)


def record_delivery(
    session: Session,
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
    }
    dialect = session.get_bind().dialect.name
    # SQLAlchemy has no backend-neutral "insert or skip": build it per dialect.
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=["id"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(Delivery).values(**values).on_conflict_do_nothing(index_elements=["id"])
    else:
        raise RuntimeError(f"deliveries need PostgreSQL or SQLite, not {dialect}")
    # RETURNING, not rowcount: psycopg reports -1 as the rowcount of this
    # statement, which would make every duplicate look new.
    return session.execute(stmt.returning(Delivery.id)).scalar_one_or_none() is not None


def get_delivery(session: Session, delivery_id: str) -> Delivery:
    if "\x00" in delivery_id:  # PostgreSQL refuses NUL in text: no such id exists
        raise DeliveryNotFound("no delivery with that id")
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"no delivery {delivery_id!r}")
    return delivery


def _transition(session: Session, delivery_id: str, allowed: Iterable[str] | None, **values: Any) -> bool:
    """One conditional UPDATE: the status check and the change are atomic, so
    a late writer (the web view marking a delivery queued after a fast worker
    already processed it) cannot move it backwards."""
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


def mark_queued(
    session: Session, delivery_id: str, job_id: str, *, from_statuses: Iterable[str] = (RECEIVED,)
) -> bool:
    """The job is in Redis. The web view passes only ``received``; the sweep
    and replay pass the states they re-queue from."""
    return _transition(session, delivery_id, from_statuses, status=QUEUED, job_id=job_id, queued_at=utcnow())


def mark_processing(session: Session, delivery_id: str) -> bool:
    """A worker starts on it; False when it is already finished (a sweep or
    a duplicate job raced the original), so the worker does nothing."""
    return _transition(
        session, delivery_id, [s for s in STATUSES if s not in FINISHED],
        status=PROCESSING, started_at=utcnow(), attempts=Delivery.attempts + 1, error=None,
    )


def mark_processed(session: Session, delivery_id: str, outcome: dict[str, Any]) -> bool:
    return _transition(session, delivery_id, None, status=PROCESSED, outcome=outcome,
                       error=None, processed_at=utcnow())


def mark_ignored(session: Session, delivery_id: str, reason: str, **details: Any) -> bool:
    return _transition(session, delivery_id, None, status=IGNORED,
                       outcome={"result": "ignored", "reason": reason, **details},
                       error=None, processed_at=utcnow())


def mark_failed(session: Session, delivery_id: str, error: str) -> bool:
    # Errors are stored for operators; callers pass messages, never tokens.
    return _transition(session, delivery_id, None, status=FAILED, error=error[:2000], processed_at=utcnow())


def mark_deferred(session: Session, delivery_id: str, reason: str, until: datetime | None = None) -> bool:
    outcome: dict[str, Any] = {"result": "deferred", "reason": reason}
    if until is not None:
        outcome["until"] = until.isoformat()
    return _transition(session, delivery_id, None, status=DEFERRED, outcome=outcome)


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


def deliveries_to_sweep(
    session: Session, older_than: timedelta, *, stale_after: timedelta = timedelta(minutes=15),
    limit: int = 500, after: tuple[datetime, str] | None = None,
) -> list[Delivery]:
    """Deliveries that need (re)queueing: recorded but never queued for at
    least ``older_than`` (so the sweep does not race the web view that is
    about to queue them), or queued/processing with no progress for
    ``stale_after`` (the job was lost: Redis flushed, a worker killed)."""
    now = utcnow()
    received_before = now - older_than
    stale_before = now - stale_after
    stmt = (
        select(Delivery)
        .where(
            or_(
                (Delivery.status == RECEIVED) & (Delivery.received_at <= received_before),
                (Delivery.status == QUEUED) & (Delivery.queued_at <= stale_before),
                (Delivery.status == PROCESSING) & (Delivery.started_at <= stale_before),
            )
        )
        .order_by(Delivery.received_at, Delivery.id)
        .limit(limit)
    )
    if after is not None:
        # Keyset paging: the next batch after (received_at, id) of the last one seen.
        stmt = stmt.where(tuple_(Delivery.received_at, Delivery.id) > tuple_(after[0], after[1]))
    return list(session.scalars(stmt))


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


def delivery_to_dict(d: Delivery, *, with_payload: bool = False) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        v = as_utc(v)
        return v.isoformat() if v else None

    out: dict[str, Any] = {
        "id": d.id,
        "provider": d.provider,
        "event": d.event,
        "action": d.action,
        "status": d.status,
        "org": d.org_key,
        "attempts": d.attempts,
        "job": d.job_id,
        "error": d.error,
        "outcome": d.outcome or {},
        "received_at": iso(d.received_at),
        "queued_at": iso(d.queued_at),
        "started_at": iso(d.started_at),
        "processed_at": iso(d.processed_at),
    }
    if with_payload:
        out["payload"] = d.payload
    return out
