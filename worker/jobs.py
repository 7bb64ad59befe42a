"""RQ jobs: module-level functions that take ids and strings and reload
everything they need themselves (a job may run in another process, minutes
later, after the state it was queued for has changed).

- ``process_delivery``: one recorded webhook delivery (queue ``webhooks``).
- ``sync_org``: one full org sync, never two at once for an org (``sync``).
- ``schedule_resyncs``, ``sweep``, ``prune``: periodic (``default``), enqueued
  by ``orgsync cron`` (worker/cron.py).
"""
from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import LockError
from rq import Queue, Worker, get_current_job
from rq.job import Job, JobStatus
from rq.registry import clean_registries

from models import deliveries as dstore
from models import queries, retention
from models.tables import as_utc, utcnow
from sync.context import SyncContext, build_sync_context
from sync.errors import RateLimited
from worker.logs import get_logger, log_context
from worker.queues import (
    DELIVERY_TIMEOUT,
    WAITING,
    RqEnqueuer,
    all_queues,
    deferred_delivery_job_id,
    delivery_job_id,
    enqueue_delivery,
    enqueue_full_sync,
    fetch_job,
)
from worker.runtime import Runtime, get_runtime

log = get_logger("orgsync.jobs")

# The per-org sync lock. Its timeout is short and kept alive by a heartbeat
# thread while the sync runs, so a worker killed mid-sync (SIGKILL, OOM, lost
# host) blocks the org for at most SYNC_LOCK_TIMEOUT, not for the job timeout.
SYNC_LOCK_TIMEOUT = 120
# A sync that finds the org locked tries again this much later instead of
# blocking a worker slot while another worker syncs the same org.
SYNC_BUSY_DELAY = timedelta(seconds=15)

# Sweep thresholds: a delivery recorded but not queued for this long lost its
# enqueue (Redis was down when it arrived); one queued or processing without
# progress for STALE_AFTER lost its job (Redis flushed, worker killed).
SWEEP_RECEIVED_AFTER = timedelta(seconds=60)
# Queued or processing with no progress for this long, and RQ no longer has
# the job (Redis lost it, a worker was killed): queued again. The liveness
# check against RQ is what prevents a double run, so this can be short.
SWEEP_STALE_AFTER = timedelta(minutes=2)
# One sweep handles batches until the backlog is empty or this much time passed
# (it runs every minute; after a Redis outage thousands may need re-queueing).
SWEEP_TIME_BUDGET = 45.0
# A delivery that has taken a worker down this many times is not re-queued
# again: it is marked failed for an operator to look at (and replay).
MAX_DELIVERY_ATTEMPTS = 10
PRUNE_AFTER = timedelta(days=30)

# Resync scheduling (see worker/cron.py for how the slots are spread).
RESYNC_HORIZON_KEY = "orgsync:resync-horizon"

_context: tuple[int, Runtime, SyncContext] | None = None
_context_lock = threading.Lock()


def sync_context() -> SyncContext:
    """The process's SyncContext, rebuilt after a fork (RQ's work horse) so
    that no database connection is shared between processes."""
    global _context
    rt = get_runtime()
    with _context_lock:
        if _context is None or _context[0] != os.getpid() or _context[1] is not rt:
            if _context is not None and _context[0] != os.getpid():
                # Connections inherited from the parent belong to the parent.
                rt.engine.dispose(close=False)
            _context = (os.getpid(), rt, build_sync_context(rt.settings, rt.session_factory))
        return _context[2]


def set_sync_context(ctx: SyncContext | None) -> None:
    """Tests: use this context (e.g. providers pointed at a fake server)."""
    global _context
    with _context_lock:
        _context = None if ctx is None else (os.getpid(), get_runtime(), ctx)


def _job_id() -> str | None:
    job = get_current_job()
    return job.id if job is not None else None


# --------------------------------------------------------------------------- deliveries


def process_delivery(delivery_id: str) -> str:
    """Process one recorded delivery; returns its final status.

    Transient provider errors propagate so RQ retries with backoff (the
    delivery is marked failed in between, and stays failed, replayable, once
    the retries are spent). A rate limit reschedules the delivery at the
    reset time and leaves it ``deferred``: not a failure.
    """
    from sync.events import process_delivery as process

    rt = get_runtime()
    with log_context(delivery=delivery_id, job_id=_job_id()):
        try:
            status = process(sync_context(), delivery_id, RqEnqueuer(rt.redis))
        except RateLimited as exc:
            at = _not_before_now(exc.reset_at)
            # The running job's hash still holds the normal id, so the
            # rescheduled job takes one of its own.
            job_id = enqueue_delivery(rt.redis, delivery_id, at=at,
                                      job_id=deferred_delivery_job_id(delivery_id, at))
            with rt.session() as s:
                dstore.mark_deferred(s, delivery_id, "rate limited", until=at)
            log.info("delivery deferred by rate limit", until=at.isoformat(), rescheduled=job_id)
            return dstore.DEFERRED
        log.info("delivery processed", status=status)
        return status


def _not_before_now(at: datetime) -> datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(at, datetime.now(UTC) + timedelta(seconds=1))


# --------------------------------------------------------------------------- full syncs


def sync_lock_name(workspace_id: str) -> str:
    return f"orgsync:lock:sync:{workspace_id}"


def sync_lock(connection: redis.Redis, workspace_id: str, timeout: float = SYNC_LOCK_TIMEOUT) -> Any:
    # thread_local=False: the heartbeat thread extends the lock the main
    # thread took.
    return connection.lock(sync_lock_name(workspace_id), timeout=timeout, blocking=False,
                           thread_local=False)


class _LockHeartbeat(threading.Thread):
    """Keeps a lock alive while its holder works; dies with the process."""

    def __init__(self, lock: Any, every: float) -> None:
        super().__init__(name="sync-lock-heartbeat", daemon=True)
        self.lock = lock
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.lock.reacquire()
            except (LockError, redis.RedisError) as exc:
                log.warning("could not extend sync lock", error=str(exc))

    def stop(self) -> None:
        self.stopped.set()


def sync_org(workspace_id: str, trigger: str, force: bool = False) -> dict[str, Any]:
    """Full sync of one org. Never runs twice at once for an org: a job that
    finds the org locked re-queues itself for shortly later."""
    from sync.orgs import full_sync
    from worker.queues import advance_sync_generation

    rt = get_runtime()
    conn = rt.redis
    job = get_current_job()
    if job is not None:
        generation = job.meta.get("generation")
        if generation is not None:
            # Before anything is read: triggers from now on need a new sync.
            advance_sync_generation(conn, workspace_id, int(generation))
        # A forced trigger may have joined this job after it was queued.
        force = force or bool(job.get_meta(refresh=True).get("force"))
    with log_context(workspace=workspace_id, job_id=job.id if job else None, trigger=trigger):
        lock = sync_lock(conn, workspace_id)
        if not lock.acquire():
            again = enqueue_full_sync(conn, workspace_id, trigger=trigger, force=force, delay=SYNC_BUSY_DELAY)
            _record_follow_up(conn, job, again)
            log.info("org is being synced by another job; retrying later", rescheduled=again)
            return {"result": "busy", "rescheduled": again}
        heartbeat = _LockHeartbeat(lock, SYNC_LOCK_TIMEOUT / 3)
        heartbeat.start()
        try:
            result = full_sync(sync_context(), workspace_id, trigger=trigger, force=force)
        except RateLimited as exc:
            at = _not_before_now(exc.reset_at)
            again = enqueue_full_sync(conn, workspace_id, trigger=trigger, force=force, at=at)
            _record_follow_up(conn, job, again)
            log.info("full sync deferred by rate limit", until=at.isoformat(), rescheduled=again)
            return {"result": "rate_limited", "rescheduled": again, "at": at.isoformat()}
        finally:
            heartbeat.stop()
            try:
                lock.release()
            except LockError:
                # It expired (the sync outlived a lost heartbeat); another
                # job may hold it now, and that one is not ours to release.
                log.warning("sync lock had expired before release")
        log.info("full sync finished", result=result.get("result"), added=result.get("added"),
                 removed=result.get("removed"), changed=result.get("changed"),
                 api_calls=result.get("api_calls"))
        return result


def follow_up_key(job_id: str) -> str:
    return f"orgsync:job-next:{job_id}"


def _record_follow_up(conn: redis.Redis, job: Job | None, next_id: str) -> None:
    """Lets `orgsync resync --wait` follow a sync that re-queued itself."""
    if job is not None and next_id != job.id:
        conn.set(follow_up_key(job.id), next_id, ex=3600)


# --------------------------------------------------------------------------- periodic


def schedule_resyncs(now: float | None = None) -> int:
    """Schedule the full resyncs whose slot falls before the next run of this
    job (worker/cron.py spreads the slots over the interval). Returns how
    many were scheduled."""
    from worker.cron import RESYNC_TICK, resync_jitter, resync_slots

    rt = get_runtime()
    conn = rt.redis
    interval = rt.settings.resync_interval
    tick = min(RESYNC_TICK, interval)
    current = datetime.now(UTC).timestamp() if now is None else now
    # One scheduler at a time: two cron processes (against the documentation)
    # must not both schedule the same window.
    guard = conn.lock("orgsync:lock:schedule-resyncs", timeout=60, blocking=False)
    if not guard.acquire():
        return 0
    try:
        raw = conn.get(RESYNC_HORIZON_KEY)
        horizon = float(raw) if raw else None
        # Slots missed while cron was briefly down are caught up; after a long
        # outage (or on the first run) every org would be "missed" at once, so
        # scheduling starts fresh from now instead of stampeding.
        start = horizon if horizon is not None and current - interval < horizon else current
        start = min(start, current + 2 * tick)
        end = min(current + 2 * tick, start + interval)
        if end <= start:
            return 0
        with rt.session() as s:
            ids = queries.resyncable_workspace_ids(s)
        scheduled = 0
        rng = random.Random()
        jitter = resync_jitter(interval)
        for workspace_id, slot in resync_slots(ids, interval, start, end):
            at = max(slot, current) + rng.uniform(0, jitter)
            enqueue_full_sync(conn, workspace_id, trigger="schedule",
                              at=datetime.fromtimestamp(at, UTC))
            scheduled += 1
        conn.set(RESYNC_HORIZON_KEY, end, ex=interval * 2)
    finally:
        try:
            guard.release()
        except LockError:
            pass
    log.info("resyncs scheduled", count=scheduled, window_start=start, window_end=end)
    return scheduled


def _job_live(connection: redis.Redis, job_id: str | None) -> bool:
    if not job_id:
        return False
    job = fetch_job(connection, job_id)
    return job is not None and job.get_status(refresh=False) in (*WAITING, JobStatus.STARTED)


def sweep() -> dict[str, int]:
    """Every minute: re-queue what was lost.

    - RQ's abandoned jobs (worker killed: no heartbeat) are retried or failed
      now rather than at the next worker's maintenance pass;
    - deliveries recorded but never queued (Redis was down when they
      arrived), or queued/processing/deferred whose job no longer exists, are
      queued again.
    """
    rt = get_runtime()
    conn = rt.redis
    for queue in all_queues(conn):
        clean_registries(queue)
    requeued = gave_up = 0
    deadline = time.monotonic() + SWEEP_TIME_BUDGET
    with rt.session() as s:
        lost = [(d.id, d.status, d.job_id, d.attempts, d.started_at)
                for d in queries.lost_deferred_deliveries(s, SWEEP_STALE_AFTER)]
    requeued, gave_up = _sweep_batch(conn, lost)
    cursor = None
    while time.monotonic() < deadline:
        with rt.session() as s:
            batch = dstore.deliveries_to_sweep(s, SWEEP_RECEIVED_AFTER, stale_after=SWEEP_STALE_AFTER,
                                               after=cursor)
            todo = [(d.id, d.status, d.job_id, d.attempts, d.started_at) for d in batch]
            if batch:
                cursor = (batch[-1].received_at, batch[-1].id)
        if not todo:
            break
        r, g = _sweep_batch(conn, todo)
        requeued, gave_up = requeued + r, gave_up + g
    return {"requeued": requeued, "gave_up": gave_up}


def _sweep_batch(
    conn: redis.Redis, todo: list[tuple[str, str, str | None, int, datetime | None]]
) -> tuple[int, int]:
    rt = get_runtime()
    requeued = gave_up = 0
    overdue_before = utcnow() - timedelta(seconds=DELIVERY_TIMEOUT + 30)
    for delivery_id, status, job_id, attempts, started_at in todo:
        job_ids = {j for j in (job_id, delivery_job_id(delivery_id)) if j}
        started = as_utc(started_at)
        if status == "processing" and started is not None and started <= overdue_before:
            # Processing for longer than the job timeout: whatever RQ's
            # registries still say (a killed worker's job stays "started"
            # until RQ notices), no worker is running it any more. Its stale
            # job record would block the unique re-enqueue.
            for jid in job_ids:
                job = fetch_job(conn, jid)
                if job is not None and job.get_status(refresh=False) == JobStatus.STARTED:
                    job.delete()
        if any(_job_live(conn, jid) for jid in job_ids):
            continue  # RQ still has it (queued, scheduled for a retry, or running)
        with rt.session() as s:
            if attempts >= MAX_DELIVERY_ATTEMPTS:
                dstore.mark_failed(s, delivery_id, f"gave up after {attempts} attempts (the job kept getting lost)")
                gave_up += 1
                continue
        new_job = enqueue_delivery(conn, delivery_id)
        with rt.session() as s:
            dstore.mark_queued(s, delivery_id, new_job, from_statuses=(status,))
        requeued += 1
        log.info("delivery re-queued by sweep", delivery=delivery_id, was=status)
    return requeued, gave_up


def prune() -> int:
    """Daily: delete processed and ignored deliveries older than 30 days."""
    rt = get_runtime()
    with rt.session() as s:
        n = dstore.prune_processed(s, PRUNE_AFTER)
    log.info("deliveries pruned", count=n)
    return n


def warm_up(rt: Runtime) -> None:
    """Do once in the worker's parent what every job would otherwise repeat.

    RQ's forking worker runs each job in a fresh child: anything imported or
    parsed lazily inside a job is redone per job (PyGithub and python-gitlab
    imports, parsing the app's RSA key: together hundreds of milliseconds).
    Children inherit whatever the parent loaded before forking.
    """
    import sync.events
    import sync.login
    import sync.orgs
    import sync.providers.gitlab  # noqa: F401
    from sync.providers.github import parsed_private_key

    if rt.settings.github_app_private_key:
        try:
            parsed_private_key(rt.settings.github_app_private_key)
        except (ValueError, TypeError):
            # A bad key is reported by the syncs that need it (link broken).
            log.warning("the GitHub App private key cannot be parsed")


class OrgsyncWorker(Worker):
    """RQ's forking worker; each work horse drops the database connections
    inherited from the parent, which must never be shared across processes."""

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        get_runtime().engine.dispose(close=False)
        super().main_work_horse(job, queue)


def run_jobs_inline(connection: redis.Redis, *, until_idle: float = 0.0) -> None:
    """Drain the queues in this process (the embedded default has no separate
    worker): a burst SimpleWorker with the scheduler, repeated while retries
    scheduled within ``until_idle`` seconds are due."""
    import time

    from rq import SimpleWorker

    deadline = time.monotonic() + until_idle
    while True:
        SimpleWorker(all_queues(connection), connection=connection).work(
            burst=True, with_scheduler=True, logging_level="WARNING")
        nxt = _next_scheduled(connection)
        if nxt is None or time.monotonic() + max(0.0, nxt - time.time()) > deadline:
            return
        time.sleep(max(0.0, nxt - time.time()) + 0.05)


def _next_scheduled(connection: redis.Redis) -> float | None:
    times: list[float] = []
    for q in all_queues(connection):
        first = connection.zrange(q.scheduled_job_registry.key, 0, 0, withscores=True)
        if first:
            times.append(float(first[0][1]))  # type: ignore[index]
    return min(times) if times else None


__all__ = [
    "OrgsyncWorker",
    "process_delivery",
    "prune",
    "run_jobs_inline",
    "schedule_resyncs",
    "sweep",
    "sync_org",
]


SYNC_RUNS_PRUNE_AFTER = timedelta(days=30)


def prune_sync_runs() -> int:
    """Daily: delete sync runs older than 30 days (each workspace's newest
    full run is kept: status shows it as the last sync)."""
    rt = get_runtime()
    with rt.session() as s:
        n = retention.prune_sync_runs(s, SYNC_RUNS_PRUNE_AFTER)
    log.info("sync runs pruned", count=n)
    return n
