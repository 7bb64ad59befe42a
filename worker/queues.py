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
        from models import store
        from models.base import session_scope

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


# --------------------------------------------------------------------------- operator actions
# Shared by the admin API (webhooks/api.py) and the CLI (worker/cli.py), so
# both answer with the same objects.


def resync(session: Any, connection: redis.Redis | None, target: str, *, force: bool = False,
           trigger: str = "operator") -> list[dict[str, str | None]]:
    """Owe full syncs: ``target`` is a workspace reference or ``"all"`` (every
    active provider workspace). Returns [{"workspace", "job"}]; "job" is the
    lane's wake-up (None when Redis could not be reached: the sweep wakes it)."""
    from models import queries, store
    from models.errors import InvalidState

    if target == "all":
        targets = [store.get_workspace(session, ws_id) for ws_id in queries.resyncable_workspace_ids(session)]
    else:
        ws = store.find_workspace(session, target)
        if ws.kind != "provider":
            raise InvalidState(f"workspace {ws.name!r} is a {ws.kind} workspace; only provider workspaces sync")
        if ws.status == "disconnected":
            raise InvalidState(f"workspace {ws.name!r} is disconnected; it syncs again once reconnected")
        targets = [ws]
    for ws in targets:
        lane_store.request_full_sync(session, lane_of_workspace(ws), trigger=trigger, force=force)
    session.commit()  # the requests must be visible before any drain looks
    out: list[dict[str, str | None]] = []
    for ws in targets:
        lane = lane_of_workspace(ws)
        job: str | None = None
        if connection is not None:
            try:
                # An operator's resync always rings: a pending flag whose job
                # was lost would otherwise hold it back until the sweep.
                job = wake(connection, lane, queue="sync", force=True)
            except redis.RedisError:
                job = None
        out.append({"workspace": ws.id, "job": job})
    return out


def replay_delivery(session: Any, connection: redis.Redis | None, delivery_id: str) -> dict[str, Any]:
    """Make a failed (or stuck) delivery due now and wake its lane;
    processed and ignored ones are finished and are not replayed."""
    from models import deliveries

    lane = deliveries.replay(session, delivery_id)
    session.commit()
    job: str | None = None
    if connection is not None:
        try:
            job = wake(connection, lane, force=True)
        except redis.RedisError:
            job = None
    return {"delivery": delivery_id, "status": "queued" if job else "received", "job": job}


def status_report(session: Any, connection: redis.Redis | None) -> dict[str, Any]:
    """What operators look at: provider workspaces with their last full
    sync, held syncs, deliveries pending and failed, queue depths."""
    from models import deliveries, queries, store
    from models.tables import as_utc

    runs = queries.last_full_runs(session)
    workspaces = []
    held = []
    for ws in queries.provider_workspaces(session):
        run = runs.get(ws.id)
        last = store.sync_run_to_dict(run) if run is not None else None
        if last is not None:
            last["at"] = last["finished_at"] or last["started_at"]
        checked = as_utc(ws.installation_checked_at)
        item = {**store.workspace_to_dict(ws), "link_error": ws.link_error, "last_sync": last,
                "installation_id": ws.installation_id,
                "installation_checked_at": checked.isoformat() if checked else None}
        workspaces.append(item)
        if run is not None and run.result == "held":
            held.append({"workspace": ws.id, "name": ws.name, "run": run.id, "reason": run.error})
    counts = queries.delivery_status_counts(session)
    report: dict[str, Any] = {
        "workspaces": workspaces,
        "held": held,
        "deliveries": {
            "pending": sum(counts.get(s, 0) for s in deliveries.PENDING),
            "failed": counts.get(deliveries.FAILED, 0),
            "deferred": counts.get(deliveries.DEFERRED, 0),
            "retrying": counts.get(deliveries.RETRYING, 0),
            "by_status": counts,
        },
        # Full syncs owed (due times on the orgs' lanes, a retry's or a rate
        # limit's included): what the database says is still to do.
        "full_syncs_owed": lane_store.count_owed_full_syncs(session),
        "queues": None,
    }
    if connection is not None:
        try:
            report["queues"] = queue_depths(connection)
        except redis.RedisError as exc:
            report["queues_error"] = f"redis unreachable: {type(exc).__name__}"
    return report
