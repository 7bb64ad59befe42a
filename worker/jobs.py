"""RQ jobs: module-level functions that take ids and strings and reload
everything they need themselves (a job may run in another process, minutes
later, after the state it was queued for has changed).

- ``drain_lane``: wake-up of one lane (an org): drain its due deliveries and
  the full sync it is owed, under the lane's lease (sync.batch). Queues
  ``webhooks`` and ``sync``.
- ``sweep``: every 30 s, wake every lane with due or orphaned work (retries,
  rate-limit deferrals, a killed worker's expired leases, deliveries whose
  wake-up Redis lost). Queue ``webhooks``: recovery must not wait behind the
  backlog it recovers.
- ``schedule_resyncs``: owe each connected org its periodic full resync, in
  its slot of the interval (due times in the database).
- ``reconcile_installations``: every minute, adopt GitHub App installations
  whose webhook never arrived and notice the ones that are gone.
- ``prune``: daily.

The database says what is due; a job lost with Redis or with its worker
changes nothing but when the work runs.
"""
from __future__ import annotations

import os
import random
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import LockError
from rq import Queue, SimpleWorker, Worker, get_current_job
from rq.job import Job
from sqlalchemy import select

from models import deliveries as dstore
from models import lanes as lane_store
from models import queries, retention, store
from models.tables import SyncRun, utcnow
from runtime.logs import get_logger, log_context
from runtime.process import Runtime, get_runtime
from runtime.queues import RqEnqueuer, RqWaker, all_queues, clear_wake, wake
from sync import batch, installations
from sync.context import SyncContext
from sync.errors import RateLimited
from worker.schedule import RESYNC_TICK, resync_jitter, resync_slots

log = get_logger("orgsync.jobs")

# One sweep wakes at most this many lanes (it runs every 30 s).
SWEEP_MAX_LANES = 2000
PRUNE_AFTER = timedelta(days=30)
# A sync run still "running" this long after it started, on a lane nobody
# holds, was lost with its worker.
RUN_LOST_AFTER = timedelta(minutes=10)

# Resync scheduling (see worker/cron.py for how the slots are spread).
RESYNC_HORIZON_KEY = "orgsync:resync-horizon"

def sync_context() -> SyncContext:
    """The process's SyncContext (built by the Runtime, rebuilt after a fork)."""
    return get_runtime().sync_context


def set_sync_context(ctx: SyncContext | None) -> None:
    """Tests: use this context (e.g. providers pointed at a fake server)."""
    get_runtime().use_sync_context(ctx)


def _holder() -> str:
    job = get_current_job()
    tail = job.id[-12:] if job is not None else uuid.uuid4().hex[:12]
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{tail}"


# --------------------------------------------------------------------------- the lanes


def drain_lane(lane: str) -> dict[str, Any]:
    """Drain one lane's due work (see sync.batch)."""
    rt = get_runtime()
    conn = rt.redis

    def clear() -> None:
        try:
            clear_wake(conn, lane)
        except redis.RedisError:
            # Without the flag cleared a later delivery may not ring the bell;
            # the sweep still will.
            log.warning("could not clear the wake-up flag", lane=lane)

    with log_context(lane=lane, job_id=getattr(get_current_job(), "id", None)):
        report = batch.drain(sync_context(), lane, _holder(), clear_wake=clear, wake=RqWaker(conn))
        if report.busy:
            log.debug("lane is being drained by another worker", lane=lane)
        else:
            log.info("lane drained", **report.as_dict())
        return report.as_dict()


def sweep() -> dict[str, int]:
    """Every minute: wake every lane with due or orphaned work.

    Due work is what the database says is due: retries and rate-limit
    deferrals whose time has come, deliveries whose wake-up was lost, rows
    and lanes whose lease ran out (a killed worker), full syncs owed. A lane
    someone holds is left to its holder, which looks again before it lets go.
    """
    rt = get_runtime()
    conn = rt.redis
    with rt.session() as s:
        due = dstore.lanes_with_due_work(s, limit=SWEEP_MAX_LANES)
        due += [lane for lane in lane_store.lanes_with_due_full_sync(s, limit=SWEEP_MAX_LANES)
                if lane not in due]
        free = [lane for lane in due if lane_store.lane_is_free(s, lane)]
        lost_runs = _close_lost_runs(s)
    woken = 0
    for lane in free:
        try:
            wake(conn, lane, force=True)
            woken += 1
        except redis.RedisError as exc:
            log.warning("sweep could not wake a lane", lane=lane, error=type(exc).__name__)
            break
    if woken or lost_runs:
        log.info("sweep", woken=woken, due=len(due), lost_runs=lost_runs)
    return {"woken": woken, "due": len(due), "lost_runs": lost_runs}


def _close_lost_runs(session: Any) -> int:
    """Sync runs left ``running`` by a worker that died: marked ``lost`` once
    their org's lane is free again (nobody is still running them)."""
    cutoff = utcnow() - RUN_LOST_AFTER
    closed = 0
    for run in session.scalars(select(SyncRun).where(SyncRun.result == "running",
                                                     SyncRun.started_at < cutoff).limit(200)):
        ws = store.get_workspace(session, run.workspace_id)
        if not lane_store.lane_is_free(session, lane_store.lane_of_workspace(ws)):
            continue
        run.result = "lost"
        run.finished_at = utcnow()
        run.error = "the worker running it stopped before it finished"
        closed += 1
    return closed


def schedule_resyncs(now: float | None = None) -> int:
    """Owe each connected org its periodic full resync at its slot in the
    coming window (worker/cron.py spreads the slots over the interval).
    The due times live in the database; the sweep wakes each lane when its
    slot comes. Returns how many were scheduled."""
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
        rng = random.Random()
        jitter = resync_jitter(interval)
        scheduled = 0
        with rt.session() as s:
            ids = queries.resyncable_workspace_ids(s)
            for workspace_id, slot in resync_slots(ids, interval, start, end):
                at = max(slot, current) + rng.uniform(0, jitter)
                ws = store.get_workspace(s, workspace_id)
                lane_store.request_full_sync(s, lane_store.lane_of_workspace(ws), trigger="schedule",
                                             due_at=datetime.fromtimestamp(at, UTC))
                scheduled += 1
        conn.set(RESYNC_HORIZON_KEY, end, ex=interval * 2)
    finally:
        try:
            guard.release()
        except LockError:
            pass
    log.info("resyncs scheduled", count=scheduled, window_start=start, window_end=end)
    return scheduled


def prune() -> int:
    """Daily: delete processed and ignored deliveries older than 30 days."""
    rt = get_runtime()
    with rt.session() as s:
        n = dstore.prune_processed(s, PRUNE_AFTER)
    log.info("deliveries pruned", count=n)
    return n


def reconcile_installations() -> dict[str, Any]:
    """Periodic: adopt GitHub App installations whose webhook never arrived
    and disconnect, once verified, the ones that are gone (sync/installations.py).
    A rate limit or an unreachable GitHub just waits for the next period."""
    rt = get_runtime()
    if not (rt.settings.github_app_id and rt.settings.github_app_private_key):
        return {"result": "skipped", "reason": "no GitHub App configured"}
    with log_context(job_id=getattr(get_current_job(), "id", None)):
        try:
            result = installations.reconcile_installations(sync_context(),
                                                           RqEnqueuer(rt.redis, rt.session_factory))
        except RateLimited as exc:
            log.info("installation reconciliation rate limited", until=exc.reset_at.isoformat())
            return {"result": "rate_limited", "at": exc.reset_at.isoformat()}
        log.info("installations reconciled", **{k: v for k, v in result.items() if not isinstance(v, list)})
        return {"result": "ok", **result}


# --------------------------------------------------------------------------- processes


def warm_up(rt: Runtime) -> None:
    """Do once, before the first job, what every job would otherwise repeat
    (and, for a forking worker, what each child inherits): PyGithub and
    python-gitlab imports, parsing the app's RSA key."""
    import sync.events
    import sync.login
    import sync.orgs
    import sync.providers.gitlab  # noqa: F401
    from sync.providers.github_auth import parsed_private_key

    if rt.settings.github_app_private_key:
        try:
            parsed_private_key(rt.settings.github_app_private_key)
        except (ValueError, TypeError):
            # A bad key is reported by the syncs that need it (link broken).
            log.warning("the GitHub App private key cannot be parsed")


class OrgsyncWorker(Worker):
    """RQ's forking worker (``orgsync worker --fork``); each work horse drops
    the database connections inherited from the parent, which must never be
    shared across processes."""

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        get_runtime().engine.dispose(close=False)
        super().main_work_horse(job, queue)


def run_jobs_inline(connection: redis.Redis, *, until: float = 0.0, done: Any = None, poll: float = 0.5,
                    worker_class: type[SimpleWorker] | None = None) -> None:
    """The embedded default has no separate worker or cron: drain the queues
    in this process with a burst SimpleWorker, and sweep (so retries and
    deferrals whose time comes are run exactly as in production), until
    ``done()`` says so or ``until`` (a monotonic deadline) passes.
    ``worker_class`` lets the CLI handle Ctrl-C its own way."""
    while True:
        (worker_class or SimpleWorker)(all_queues(connection), connection=connection).work(
            burst=True, logging_level="WARNING")
        if done is not None and done():
            return
        if time.monotonic() >= until:
            return
        time.sleep(poll)
        sweep()


__all__ = [
    "OrgsyncWorker",
    "drain_lane",
    "prune",
    "run_jobs_inline",
    "schedule_resyncs",
    "sweep",
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
