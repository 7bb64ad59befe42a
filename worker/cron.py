"""Periodic jobs, enqueued by RQ's cron scheduler (``orgsync cron``).

Run EXACTLY ONE ``orgsync cron`` per deployment: RQ's cron scheduler has no
leader election, so two would enqueue every periodic job twice (harmless for
the resync scheduler, which takes a Redis lock and coalesces syncs, but
wasteful). The worker processes do the actual work.

Jobs:
- ``schedule_resyncs`` every RESYNC_TICK seconds (``default``): owes each org
  whose slot falls in the coming window its full resync (a due time in the
  database);
- ``sweep`` every 30 s (``webhooks``, the first queue): wakes every lane
  with due or orphaned work;
- ``prune`` daily at 03:17 UTC (``default``).
- ``reconcile_installations`` every RECONCILE_EVERY (a minute, ``default``): a
  missed GitHub installation webhook heals within one period.
- ``prune_sync_runs`` daily at 03:47 UTC (``default``): sync runs older than 30 days.

Spreading the resyncs: each workspace has a fixed slot in the interval,
``sha256(workspace id) mod ORGSYNC_RESYNC_INTERVAL``, plus a little random
jitter, so N orgs are synced evenly over the interval rather than all at
once (which would spike provider rate limits and the database), and an org's
resync happens at the same point of every cycle whichever process schedules
it. sha256 and not ``hash()``: Python salts ``hash`` per process.
"""
from __future__ import annotations

import redis
from rq.cron import CronJob, CronScheduler

from models.config import Settings
from sync.installations import RECONCILE_EVERY as RECONCILE_PERIOD
from worker import jobs
from worker.schedule import RESYNC_TICK, resync_jitter, resync_offset, resync_slots

__all__ = ["RESYNC_TICK", "build_cron", "register_jobs", "resync_jitter", "resync_offset", "resync_slots"]

# Retries (first after 5 s) and deferrals fire at the next sweep: half a minute
# keeps a retried delivery well within a minute, for one indexed query.
SWEEP_EVERY = 30
PRUNE_CRON = "17 3 * * *"
RECONCILE_EVERY = int(RECONCILE_PERIOD.total_seconds())
PRUNE_SYNC_RUNS_CRON = "47 3 * * *"
# Periodic jobs' own results are of no interest; failures are kept a day.
_JOB_OPTIONS = {"result_ttl": 300, "failure_ttl": 86400}


def register_jobs(scheduler: CronScheduler, settings: Settings) -> list[CronJob]:
    tick = min(RESYNC_TICK, settings.resync_interval)
    return [
        scheduler.register(jobs.schedule_resyncs, "default", interval=tick, job_timeout=300,
                           name="schedule_resyncs", **_JOB_OPTIONS),  # type: ignore[arg-type]
        # On the first queue: recovery must not wait behind the backlog it recovers.
        scheduler.register(jobs.sweep, "webhooks", interval=SWEEP_EVERY, job_timeout=300,
                           name="sweep", **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.prune, "default", cron=PRUNE_CRON, job_timeout=1800,
                           name="prune", **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.reconcile_installations, "default", interval=RECONCILE_EVERY,
                           job_timeout=300, name="reconcile_installations",
                           **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.prune_sync_runs, "default", cron=PRUNE_SYNC_RUNS_CRON, job_timeout=1800,
                           name="prune_sync_runs", **_JOB_OPTIONS),  # type: ignore[arg-type]
    ]


def build_cron(connection: redis.Redis, settings: Settings, *, logging_level: str = "INFO") -> CronScheduler:
    scheduler = CronScheduler(connection=connection, logging_level=logging_level, name="")
    register_jobs(scheduler, settings)
    return scheduler
