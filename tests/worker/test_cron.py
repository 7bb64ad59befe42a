"""Periodic jobs: what `orgsync cron` registers (worker/cron.py). How the full
resyncs are spread over the interval is tested with the slots
(tests/worker/test_schedule.py) and the job that owes them
(tests/worker/test_jobs.py)."""
from __future__ import annotations

from tests.worker_env import Env
from worker.cron import (
    PRUNE_CRON,
    PRUNE_SYNC_RUNS_CRON,
    RECONCILE_EVERY,
    RESYNC_TICK,
    SWEEP_EVERY,
    build_cron,
)


def test_cron_registers_the_periodic_jobs(env: Env) -> None:
    scheduler = build_cron(env.redis, env.runtime.settings, logging_level="WARNING")
    registered = {j.name: j for j in scheduler.get_jobs()}
    assert set(registered) == {"schedule_resyncs", "sweep", "prune", "reconcile_installations", "prune_sync_runs"}
    assert registered["reconcile_installations"].func_name == "worker.jobs.reconcile_installations"
    assert registered["reconcile_installations"].interval == RECONCILE_EVERY == 60
    assert registered["schedule_resyncs"].func_name == "worker.jobs.schedule_resyncs"
    assert registered["schedule_resyncs"].interval == min(RESYNC_TICK, env.runtime.settings.resync_interval)
    assert registered["sweep"].interval == SWEEP_EVERY == 30
    assert registered["prune"].cron == PRUNE_CRON
    assert registered["prune_sync_runs"].cron == PRUNE_SYNC_RUNS_CRON
    assert registered["prune_sync_runs"].func_name == "worker.jobs.prune_sync_runs"
    # The sweep is recovery: it must not wait behind the backlog it recovers.
    assert registered["sweep"].queue_name == "webhooks"
    assert {j.queue_name for name, j in registered.items() if name != "sweep"} == {"default"}

    # The first pass enqueues the interval jobs at once (the prune waits for 03:17).
    enqueued = scheduler.enqueue_jobs()
    assert {j.name for j in enqueued} == {"schedule_resyncs", "sweep", "reconcile_installations"}
    from rq import Queue

    assert sorted(j.func_name for j in Queue("default", connection=env.redis).get_jobs()) == [
        "worker.jobs.reconcile_installations", "worker.jobs.schedule_resyncs"]
    assert [j.func_name for j in Queue("webhooks", connection=env.redis).get_jobs()] == ["worker.jobs.sweep"]
