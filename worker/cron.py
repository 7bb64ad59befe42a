"""Periodic jobs, enqueued by RQ's cron scheduler (``orgsync cron``).

Run EXACTLY ONE ``orgsync cron`` per deployment: RQ's cron scheduler has no
leader election, so two would enqueue every periodic job twice (harmless for
the resync scheduler, which takes a Redis lock and coalesces syncs, but
wasteful). The worker processes do the actual work.

Jobs (all on the ``default`` queue):
- ``schedule_resyncs`` every RESYNC_TICK seconds: schedules (``enqueue_at``)
  the full resyncs whose slot falls in the coming window;
- ``sweep`` every minute;
- ``prune`` daily at 03:17 UTC;
- ``prune_sync_runs`` daily at 03:47 UTC (sync runs older than 30 days).

Spreading the resyncs: each workspace has a fixed slot in the interval,
``sha256(workspace id) mod ORGSYNC_RESYNC_INTERVAL``, plus a little random
jitter, so N orgs are synced evenly over the interval rather than all at
once (which would spike provider rate limits and the database), and an org's
resync happens at the same point of every cycle whichever process schedules
it. sha256 and not ``hash()``: Python salts ``hash`` per process.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import redis
from rq.cron import CronJob, CronScheduler

from models.config import Settings

RESYNC_TICK = 60
SWEEP_EVERY = 60
PRUNE_CRON = "17 3 * * *"
PRUNE_SYNC_RUNS_CRON = "47 3 * * *"
# Periodic jobs' own results are of no interest; failures are kept a day.
_JOB_OPTIONS = {"result_ttl": 300, "failure_ttl": 86400}


def resync_offset(workspace_id: str, interval: int) -> int:
    """The workspace's fixed slot within the resync interval (seconds)."""
    digest = hashlib.sha256(workspace_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % interval


def resync_jitter(interval: int) -> float:
    """Random delay added to each slot: up to 1% of the interval, at most 60 s."""
    return float(min(60, max(1, interval // 100)))


def resync_slots(workspace_ids: Iterable[str], interval: int, start: float, end: float
                 ) -> Iterator[tuple[str, float]]:
    """(workspace id, slot time) for every slot in [start, end) (Unix times)."""
    for workspace_id in workspace_ids:
        offset = resync_offset(workspace_id, interval)
        first = start + ((offset - start) % interval)
        slot = first
        while slot < end:
            yield workspace_id, slot
            slot += interval


def register_jobs(scheduler: CronScheduler, settings: Settings) -> list[CronJob]:
    from worker import jobs

    tick = min(RESYNC_TICK, settings.resync_interval)
    return [
        scheduler.register(jobs.schedule_resyncs, "default", interval=tick, job_timeout=300,
                           name="schedule_resyncs", **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.sweep, "default", interval=SWEEP_EVERY, job_timeout=300,
                           name="sweep", **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.prune, "default", cron=PRUNE_CRON, job_timeout=1800,
                           name="prune", **_JOB_OPTIONS),  # type: ignore[arg-type]
        scheduler.register(jobs.prune_sync_runs, "default", cron=PRUNE_SYNC_RUNS_CRON, job_timeout=1800,
                           name="prune_sync_runs", **_JOB_OPTIONS),  # type: ignore[arg-type]
    ]


def build_cron(connection: redis.Redis, settings: Settings, *, logging_level: str = "INFO") -> CronScheduler:
    scheduler = CronScheduler(connection=connection, logging_level=logging_level, name="")
    register_jobs(scheduler, settings)
    return scheduler
