"""The worker's RQ jobs (worker/jobs.py): the sweep wakes every lane the database
says has due work (a flushed Redis loses nothing) and closes sync runs lost
with their worker; schedule_resyncs owes each org its periodic full resync at
its slot, each org once per interval, and never stampedes after an outage."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from models import lanes, store
from models.tables import SyncRun, WorkLane, utcnow
from runtime import queues
from tests.worker_env import LANE, ORG_ID, Env, _roster, _statuses
from worker import jobs
from worker.schedule import RESYNC_TICK, resync_jitter, resync_offset


def test_redis_flushed_mid_run_loses_nothing(env_all_db: Env) -> None:
    """Wake-ups queued, then Redis loses everything (a flush, a restart
    without persistence): the jobs and the wake flags are gone, the
    deliveries are not. The sweep wakes the lane from what the database says
    is due, and each delivery is applied once."""
    env = env_all_db
    env.add_org(members=3)
    for uid in (21, 22):
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = [env.record_member_event(21)]
    assert queues.wake(env.redis, LANE) is not None  # a drain job is queued, the flag set
    ids.append(env.record_member_event(22))
    assert queues.wake(env.redis, LANE) is None  # already pending: nothing more queued
    env.redis.flushdb()
    env.drain()  # nothing left in Redis to run
    assert _statuses(env, ids) == [("received", 0)] * 2
    assert jobs.sweep()["woken"] == 1
    env.drain()
    assert _statuses(env, ids) == [("processed", 1)] * 2
    assert {21, 22} <= set(_roster(env))
    assert jobs.sweep()["woken"] == 0  # nothing due any more


def test_the_sweep_closes_sync_runs_lost_with_their_worker(env: Env) -> None:
    env.add_org(members=3)
    with env.session() as s:
        s.add(SyncRun(workspace_id=env.workspace_id, kind="full", trigger="t", result="running",
                      started_at=utcnow() - timedelta(hours=1)))
    assert jobs.sweep()["lost_runs"] == 1
    assert env.runs("full")[0].result == "lost"


def _owed(env: Env) -> dict[str, tuple[datetime, str]]:
    """Workspace id -> (due time, trigger) of every full sync owed in the database."""

    from models.tables import as_utc

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
