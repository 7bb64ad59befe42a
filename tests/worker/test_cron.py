"""Periodic jobs: what `orgsync cron` registers, and how the full resyncs are
spread over the interval (fixed per-workspace slots, distinct, inside the
interval, each org once per cycle, no stampede after a long outage)."""
from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from models import store
from tests.worker_env import Env
from worker import jobs
from worker.cron import (
    PRUNE_CRON,
    PRUNE_SYNC_RUNS_CRON,
    RECONCILE_EVERY,
    RESYNC_TICK,
    SWEEP_EVERY,
    build_cron,
    resync_jitter,
    resync_offset,
    resync_slots,
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


@pytest.mark.parametrize("interval", [60, 3600, 21600])
def test_resync_slots_are_distinct_and_inside_the_interval(interval: int) -> None:
    ids = [f"ws_{i:016x}" for i in range(40)]
    offsets = [resync_offset(w, interval) for w in ids]
    assert all(0 <= o < interval for o in offsets)
    if interval >= 3600:
        assert len(set(offsets)) == len(ids)
        # Spread, not bunched: every quarter of the interval gets some orgs.
        quarters = {o * 4 // interval for o in offsets}
        assert quarters == {0, 1, 2, 3}
    # Stable across processes (sha256, not the salted hash()).
    assert resync_offset("ws_abc", interval) == resync_offset("ws_abc", interval)

    start = 1_700_000_000.0
    slots = list(resync_slots(ids, interval, start, start + interval))
    assert sorted(w for w, _ in slots) == sorted(ids)  # each exactly once per cycle
    assert all(start <= t < start + interval for _, t in slots)
    assert all((t - resync_offset(w, interval)) % interval == 0 for w, t in slots)


def _owed(env: Env) -> dict[str, tuple[datetime, str]]:
    """Workspace id -> (due time, trigger) of every full sync owed in the database."""
    from sqlalchemy import select

    from models import lanes
    from models.tables import WorkLane, as_utc

    out: dict[str, tuple[datetime, str]] = {}
    with env.session() as s:
        for row in s.scalars(select(WorkLane).where(WorkLane.full_sync_due_at.is_not(None))):
            provider, org_id = lanes.parse_lane(row.lane)
            assert org_id is not None
            ws = store.get_provider_workspace(s, provider, org_id)
            assert ws is not None
            out[ws.id] = (as_utc(row.full_sync_due_at), row.full_sync_trigger)  # type: ignore[assignment]
    return out


def _workspaces(env: Env, n: int) -> list[str]:
    ids = []
    with env.session() as s:
        for i in range(n):
            ws = store.create_provider_workspace(s, "github", 5000 + i, f"org{i}", actor="test",
                                                 installation_id=100 + i)
            ids.append(ws.id)
        gone = store.create_provider_workspace(s, "github", 6000, "gone", actor="test", installation_id=1)
        store.disconnect(s, gone, actor="test")
    return ids


def test_schedule_resyncs_spreads_every_org_over_one_interval(env: Env) -> None:
    interval = env.runtime.settings.resync_interval
    ids = _workspaces(env, 30)
    t0 = time.time()
    total = 0
    # Cron runs the job every tick, each run covering the two ticks ahead;
    # simulate the runs that cover exactly one interval.
    t = t0
    while t <= t0 + interval - 2 * RESYNC_TICK:
        total += jobs.schedule_resyncs(now=t)
        t += RESYNC_TICK
    owed = _owed(env)
    assert total == len(owed) == len(ids)  # each org once; the disconnected one not at all
    times = {ws_id: at.timestamp() for ws_id, (at, trigger) in owed.items()}
    assert {trigger for _, trigger in owed.values()} == {"schedule"}
    assert set(times) == set(ids)
    jitter = resync_jitter(interval)
    for ws_id, at in times.items():
        slot = t0 + ((resync_offset(ws_id, interval) - t0) % interval)
        assert slot <= at <= slot + jitter + 1
    # Not all at once: 30 orgs land in many different minutes of the hour.
    assert len({int(at // 60) for at in times.values()}) >= 15
    assert max(times.values()) - min(times.values()) > interval / 2


def test_schedule_resyncs_does_not_double_schedule_or_stampede(env: Env) -> None:
    interval = env.runtime.settings.resync_interval
    _workspaces(env, 20)
    t0 = time.time()
    first = jobs.schedule_resyncs(now=t0)
    # Cron restarted and ran the job again at once: the window is already covered.
    assert jobs.schedule_resyncs(now=t0) == 0
    assert len(_owed(env)) == first

    # After an outage longer than the interval, scheduling restarts from now:
    # only the orgs whose slot is in the next window, not all twenty at once.
    later = t0 + 3 * interval
    n = jobs.schedule_resyncs(now=later)
    assert n < 20
    assert datetime.fromtimestamp(float(env.redis.get(jobs.RESYNC_HORIZON_KEY)), UTC).timestamp() > later
