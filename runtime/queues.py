"""The one place that knows how work reaches RQ: queue names, wake-ups,
job ids and timeouts.

The database holds the work (models.deliveries, models.lanes); RQ only runs
it. A job is a wake-up of one lane (an org): ``worker.jobs.drain_lane``
drains whatever the lane has due, under the lane's lease. A wake-up may be
lost, doubled or late and nothing breaks: the minute sweep rings the bell of
every lane with due or orphaned work.

Wake-ups are de-duplicated per lane by a flag in Redis (``SET NX``): while a
wake-up is pending, another costs one round trip and queues nothing. The
drain clears the flag once it holds the lane's lease and again as it stops
(see sync.batch), so a delivery recorded after the drain's last look always
finds the flag clear and queues a new wake-up.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import redis
from rq import Queue

from models import lanes as lane_store
from models import store
from models.base import session_scope
from models.lanes import lane_of_workspace

# Priority order: a worker drains webhooks first.
QUEUE_NAMES = ("webhooks", "sync", "default")

# A drain may run a full sync of a large org; the lease heartbeat, not this
# timeout, is what lets another worker take over from a dead one.
DRAIN_TIMEOUT = 3600
DRAIN_FAILURE_TTL = 86400
# A flag outlives its job only if the enqueue was lost with Redis; then the
# next delivery after this long, or the sweep, wakes the lane again.
WAKE_FLAG_TTL = 120
_WAKE_FLAG = "orgsync:wake:{}"


def get_queue(name: str, connection: redis.Redis) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=connection)


def all_queues(connection: redis.Redis) -> list[Queue]:
    return [Queue(n, connection=connection) for n in QUEUE_NAMES]


def wake_flag(lane: str) -> str:
    return _WAKE_FLAG.format(lane)


def wake(connection: redis.Redis, lane: str, *, queue: str = "webhooks", force: bool = False) -> str | None:
    """Ring the lane's bell: queue a drain unless one is already pending.

    Returns the new job's id, or None when a wake-up was already pending.
    ``force`` (the sweep) queues one whatever the flag says: a flag can
    outlive a job lost with Redis. Raises Redis errors: the caller keeps
    the work recorded and the sweep wakes the lane later.
    """
    job_id = "drain-" + uuid.uuid4().hex
    key = wake_flag(lane)
    if force:
        connection.set(key, job_id, ex=WAKE_FLAG_TTL)
    elif not connection.set(key, job_id, nx=True, ex=WAKE_FLAG_TTL):
        return None
    try:
        get_queue(queue, connection).enqueue(
            "worker.jobs.drain_lane", lane, job_id=job_id, job_timeout=DRAIN_TIMEOUT, result_ttl=0,
            failure_ttl=DRAIN_FAILURE_TTL, description=f"drain {lane}",
        )
    except BaseException:
        # The flag would hold back every wake-up for its TTL with no job behind it.
        try:
            connection.delete(key)
        except redis.RedisError:
            pass
        raise
    return job_id


def pending_wake(connection: redis.Redis, lane: str) -> str | None:
    raw = connection.get(wake_flag(lane))
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def clear_wake(connection: redis.Redis, lane: str) -> None:
    connection.delete(wake_flag(lane))


class RqWaker:
    """``wake`` for the sync layer, which knows no Redis: errors are left to
    the sweep (the work is in the database already)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def __call__(self, lane: str) -> None:
        try:
            wake(self.connection, lane, queue="sync")
        except redis.RedisError:
            pass


class RqEnqueuer:
    """``sync.events.Enqueuer`` for work started outside a lane's drain (a
    login, the installation reconciliation, an operator's reconnect): the
    full sync is a due time on the org's lane, committed, then the lane is
    woken. Redis down: the sweep wakes it."""

    def __init__(self, connection: redis.Redis | None, session_factory: Any) -> None:
        self.connection = connection
        self.session_factory = session_factory

    def full_sync(self, workspace_id: str, trigger: str) -> None:
        with session_scope(self.session_factory) as s:
            ws = store.get_workspace(s, workspace_id)
            lane = lane_of_workspace(ws)
            lane_store.request_full_sync(s, lane, trigger=trigger)
        if self.connection is not None:
            try:
                wake(self.connection, lane, queue="sync")
            except redis.RedisError:
                pass


def request_full_sync(session: Any, connection: redis.Redis | None, workspace: Any, *, trigger: str,
                      force: bool = False, at: datetime | None = None) -> str | None:
    """Owe the workspace's org a full sync (a waiting request absorbs this
    one), committed by the caller; then wake its lane if it is due now.
    Returns the wake-up job id (new or pending), if any."""
    lane = lane_of_workspace(workspace)
    lane_store.request_full_sync(session, lane, trigger=trigger, force=force, due_at=at)
    if at is not None or connection is None:
        return None  # the sweep wakes it when it is due
    session.commit()  # the row must be visible before the drain looks
    try:
        return wake(connection, lane, queue="sync") or pending_wake(connection, lane)
    except redis.RedisError:
        return None


def queue_depths(connection: redis.Redis) -> dict[str, dict[str, int]]:
    """Per queue: waiting, scheduled, running and failed job counts."""
    out: dict[str, dict[str, int]] = {}
    for q in all_queues(connection):
        out[q.name] = {
            "queued": q.count,
            "scheduled": q.scheduled_job_registry.count,
            "started": q.started_job_registry.count,
            "deferred": q.deferred_job_registry.count,
            "failed": q.failed_job_registry.count,
        }
    return out
