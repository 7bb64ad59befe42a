"""The job machinery on real RQ workers (burst mode, with the scheduler), over
fakeredis and real Redis: retries with backoff, rate-limit rescheduling,
coalescing of duplicate triggers, the per-org lock, the sweep and the prune.

Outcomes are what an operator sees: delivery statuses, sync runs, the jobs
waiting in RQ's registries, the requests the fake provider received.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rq import Queue, Retry
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import update

from models import deliveries
from models.tables import Delivery, RosterEntry
from sync.context import SyncContext, build_sync_context
from sync.providers.base import Provider
from tests.worker.conftest import Env, other_connection
from worker import jobs, queues


def scheduled(env: Env, queue: str) -> list[tuple[str, datetime]]:
    registry = ScheduledJobRegistry(queue, connection=env.redis)
    return [(job_id, registry.get_scheduled_time(job_id)) for job_id in registry.get_job_ids()]


def failed(env: Env, queue: str) -> list[str]:
    return FailedJobRegistry(queue, connection=env.redis).get_job_ids()


def wait_until_due(env: Env, queue: str) -> None:
    """Sleep until every scheduled job of ``queue`` is due (short test delays)."""
    times = [t for _, t in scheduled(env, queue)]
    if times:
        delay = (max(times) - datetime.now(UTC)).total_seconds()
        assert delay < 10, f"scheduled too far ahead for a test: {delay} s"
        time.sleep(max(0.0, delay) + 0.2)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production backoff (seconds to minutes), shortened for the test.
    The mechanism is unchanged: RQ schedules each retry and the worker's
    scheduler re-queues it when due."""
    monkeypatch.setattr(queues, "DELIVERY_RETRY", Retry(max=2, interval=[1, 1]))
    monkeypatch.setattr(queues, "SYNC_RETRY", Retry(max=2, interval=[1, 1]))


# --------------------------------------------------------------------------- retries


def test_transient_errors_retry_with_backoff_then_fail_and_can_be_replayed(env: Env, fast_retries: None) -> None:
    env.add_org()
    env.server.github.add_member(9001, 7, "user7", "member")
    env.server.github.fail("/memberships/", 502, times=None)  # GitHub keeps failing
    delivery_id = env.record_member_event(7)
    queues.enqueue_delivery(env.redis, delivery_id)

    env.drain()
    # First attempt failed: a retry is scheduled (backoff), nothing failed for good.
    assert [job_id for job_id, _ in scheduled(env, "webhooks")] == [queues.delivery_job_id(delivery_id)]
    assert failed(env, "webhooks") == []
    assert "retrying" in (env.delivery(delivery_id)["error"] or "")

    for _ in range(2):  # the two retries, each when due
        wait_until_due(env, "webhooks")
        env.drain()
    d = env.delivery(delivery_id)
    assert d["status"] == "failed" and d["attempts"] == 3
    assert failed(env, "webhooks") == [queues.delivery_job_id(delivery_id)]
    assert scheduled(env, "webhooks") == []

    # GitHub recovers; the operator replays the failed delivery.
    env.server.github.clear_faults()
    with env.session() as s:
        answer = queues.replay_delivery(s, env.redis, delivery_id)
    assert answer == {"delivery": delivery_id, "status": "queued", "job": queues.delivery_job_id(delivery_id)}
    env.drain()
    assert env.delivery(delivery_id)["status"] == "processed"
    with env.session() as s:
        assert s.get(RosterEntry, (env.workspace_id, 7)) is not None


def test_transient_sync_errors_retry_then_succeed(env: Env, fast_retries: None) -> None:
    ws = env.add_org()
    env.server.github.fail("/members", 503, times=1)
    job_id = queues.enqueue_full_sync(env.redis, ws, trigger="test")
    env.drain()
    assert [r["result"] for r in env.runs()] == ["failed"]
    assert [j for j, _ in scheduled(env, "sync")] == [job_id]  # a retry, same job
    wait_until_due(env, "sync")
    env.drain()
    assert [r["result"] for r in env.runs()] == ["failed", "ok"]
    assert env.runs()[-1]["added"] == 3
    assert failed(env, "sync") == []


# --------------------------------------------------------------------------- rate limits


def test_rate_limited_sync_is_rescheduled_at_the_reset_time_not_failed(env: Env) -> None:
    ws = env.add_org()
    reset = int(time.time()) + 1800
    env.server.github.rate_limit("primary", reset=reset)
    first = queues.enqueue_full_sync(env.redis, ws, trigger="test")
    env.drain()

    assert [r["result"] for r in env.runs()] == ["rate_limited"]
    assert failed(env, "sync") == []
    [(job_id, at)] = scheduled(env, "sync")
    # The job rescheduled itself under the next id (its own was still in use).
    assert job_id != first
    assert abs(at.timestamp() - reset) <= 1
    job = queues.fetch_job(env.redis, job_id)
    assert job is not None and job.args[:2] == (ws, "test")
    # A trigger meanwhile joins the deferred sync instead of running early.
    assert queues.enqueue_full_sync(env.redis, ws, trigger="webhook:x") == job_id


def test_rate_limited_delivery_is_deferred_then_processed_at_reset(env: Env) -> None:
    env.add_org()
    env.server.github.add_member(9001, 8, "user8", "member")
    env.server.github.rate_limit("primary", reset=int(time.time()) + 2, path_contains="/memberships/")
    delivery_id = env.record_member_event(8)
    queues.enqueue_delivery(env.redis, delivery_id)
    env.drain()

    d = env.delivery(delivery_id)
    assert d["status"] == "deferred" and d["error"] is None
    assert failed(env, "webhooks") == []
    [(job_id, at)] = scheduled(env, "webhooks")
    assert job_id.startswith(queues.delivery_job_id(delivery_id) + "-at")
    assert at >= datetime.now(UTC)

    wait_until_due(env, "webhooks")
    env.drain()
    assert env.delivery(delivery_id)["status"] == "processed"
    with env.session() as s:
        assert s.get(RosterEntry, (env.workspace_id, 8)) is not None


# --------------------------------------------------------------------------- coalescing


def test_duplicate_triggers_join_the_waiting_sync(env: Env) -> None:
    ws = env.add_org()
    ids = {queues.enqueue_full_sync(env.redis, ws, trigger=f"webhook:{i}") for i in range(5)}
    assert len(ids) == 1
    assert Queue("sync", connection=env.redis).count == 1
    # A forced trigger joining an unforced waiting sync makes it forced.
    queues.enqueue_full_sync(env.redis, ws, trigger="operator", force=True)
    job = queues.fetch_job(env.redis, ids.pop())
    assert job is not None and job.meta["force"] is True
    env.drain()
    runs = env.runs()
    assert len(runs) == 1 and runs[0]["result"] == "ok" and runs[0]["forced"] is True


class _TriggerDuringListing:
    """A provider that, while the roster is being read, gets a new trigger
    for the same org (a webhook arriving mid-sync)."""

    def __init__(self, inner: Provider, on_page: Any) -> None:
        self._inner = inner
        self._on_page = on_page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def iter_roster(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for page in self._inner.iter_roster(*args, **kwargs):
            self._on_page()
            yield page


def test_a_trigger_during_a_running_sync_gets_one_more_sync(env: Env) -> None:
    ws = env.add_org()
    base = build_sync_context(env.runtime.settings, env.runtime.session_factory)
    fired: list[str] = []

    def trigger() -> None:
        if not fired:
            env.server.github.add_member(9001, 50, "late", "member")  # the change the webhook is about
            fired.append(queues.enqueue_full_sync(env.redis, ws, trigger="webhook:late"))

    jobs.set_sync_context(SyncContext(
        base.session_factory, base.settings,
        lambda name, inst: _TriggerDuringListing(base.provider_for(name, inst), trigger),  # type: ignore[arg-type]
    ))
    first = queues.enqueue_full_sync(env.redis, ws, trigger="operator")
    env.drain()
    assert fired and fired[0] != first  # did not join the job already reading
    runs = env.runs()
    assert [r["trigger"] for r in runs] == ["operator", "webhook:late"]
    with env.session() as s:
        assert s.get(RosterEntry, (ws, 50)) is not None


# --------------------------------------------------------------------------- the per-org lock


def test_lock_held_by_a_killed_worker_expires_and_the_sync_then_runs(
    env: Env, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "SYNC_BUSY_DELAY", timedelta(seconds=1))
    ws = env.add_org()
    # Another worker took the lock and was killed: it never releases it.
    dead = jobs.sync_lock(other_connection(env.redis), ws, timeout=2)
    assert dead.acquire()

    queues.enqueue_full_sync(env.redis, ws, trigger="operator")
    env.drain()
    assert env.runs() == []  # nothing ran against the locked org
    assert env.server.github.request_count == 0
    [(again, _)] = scheduled(env, "sync")
    assert failed(env, "sync") == []

    time.sleep(2.2)  # the dead holder's lock times out
    env.drain()
    assert [r["result"] for r in env.runs()] == ["ok"]
    assert env.redis.get(jobs.sync_lock_name(ws)) is None  # released after the sync
    assert again.startswith(f"sync-{ws}")


def test_lock_is_kept_alive_while_the_sync_runs(env: Env) -> None:
    lock = jobs.sync_lock(env.redis, "ws_x", timeout=1)
    assert lock.acquire()
    beat = jobs._LockHeartbeat(lock, 0.2)
    beat.start()
    try:
        time.sleep(1.5)  # longer than the timeout
        assert not jobs.sync_lock(other_connection(env.redis), "ws_x").acquire()
    finally:
        beat.stop()
        lock.release()


# --------------------------------------------------------------------------- sweep and prune


def _set(env: Env, delivery_id: str, **values: Any) -> None:
    with env.session() as s:
        s.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))


def test_sweep_requeues_lost_deliveries_and_leaves_live_ones(env: Env) -> None:
    env.add_org()
    for uid in (11, 12, 13, 14, 15):
        env.server.github.add_member(9001, uid, f"user{uid}", "member")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    # A worker died mid-job: processing, stale, and RQ has no job for it.
    died = env.record_member_event(11)
    _set(env, died, status="processing", started_at=long_ago, queued_at=long_ago, attempts=1,
         job_id=queues.delivery_job_id(died))
    # Redis was down when it arrived: recorded, never queued.
    never_queued = env.record_member_event(12)
    _set(env, never_queued, received_at=long_ago)
    # Just arrived: the web view is about to queue it; the sweep must not race it.
    fresh = env.record_member_event(13)
    # Stale-looking but RQ still holds its job (waiting for a retry): left alone.
    live = env.record_member_event(14)
    live_job = queues.enqueue_delivery(env.redis, live, at=datetime.now(UTC) + timedelta(hours=1))
    _set(env, live, status="processing", started_at=long_ago, job_id=live_job)
    # Deferred by a rate limit whose reset passed long ago, its job lost (Redis flushed).
    lost_deferred = env.record_member_event(15)
    _set(env, lost_deferred, status="deferred", outcome={"until": long_ago.isoformat()})

    result = jobs.sweep()
    assert result == {"requeued": 3, "gave_up": 0}
    statuses = {d: env.delivery(d)["status"] for d in (died, never_queued, fresh, live, lost_deferred)}
    assert statuses == {died: "queued", never_queued: "queued", fresh: "received",
                        live: "processing", lost_deferred: "queued"}
    waiting = set(Queue("webhooks", connection=env.redis).get_job_ids())
    assert waiting == {queues.delivery_job_id(d) for d in (died, never_queued, lost_deferred)}

    env.drain()
    for d in (died, never_queued, lost_deferred):
        assert env.delivery(d)["status"] == "processed"
    assert jobs.sweep() == {"requeued": 0, "gave_up": 0}  # nothing left to do


def test_sweep_gives_up_on_a_delivery_that_keeps_killing_workers(env: Env) -> None:
    env.add_org()
    d = env.record_member_event(21)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    _set(env, d, status="processing", started_at=long_ago, attempts=jobs.MAX_DELIVERY_ATTEMPTS)
    assert jobs.sweep() == {"requeued": 0, "gave_up": 1}
    got = env.delivery(d)
    assert got["status"] == "failed" and "gave up" in got["error"]
    assert Queue("webhooks", connection=env.redis).count == 0


def test_sweep_requeues_a_delivery_whose_job_failed_for_good(env: Env) -> None:
    """Abandoned by a killed worker with no retries left, RQ fails the job;
    its hash lingers (failure_ttl) but must not block the re-queue."""
    env.add_org()
    env.server.github.add_member(9001, 31, "user31", "member")
    d = env.record_member_event(31)
    job_id = queues.enqueue_delivery(env.redis, d)
    job = queues.fetch_job(env.redis, job_id)
    assert job is not None
    q = Queue("webhooks", connection=env.redis)
    q.remove(job)
    job.set_status("failed")
    FailedJobRegistry("webhooks", connection=env.redis).add(job, ttl=3600, exc_string="AbandonedJobError")
    _set(env, d, status="processing", started_at=datetime.now(UTC) - timedelta(hours=1), job_id=job_id)

    assert jobs.sweep()["requeued"] == 1
    env.drain()
    assert env.delivery(d)["status"] == "processed"


def test_prune_deletes_old_finished_deliveries_only(env: Env) -> None:
    old = datetime.now(UTC) - timedelta(days=31)
    ids = {name: env.record_member_event(40 + i) for i, name in enumerate(
        ["old_processed", "old_ignored", "old_failed", "new_processed"])}
    _set(env, ids["old_processed"], status="processed", received_at=old)
    _set(env, ids["old_ignored"], status="ignored", received_at=old)
    _set(env, ids["old_failed"], status="failed", received_at=old)
    _set(env, ids["new_processed"], status="processed")
    assert jobs.prune() == 2
    with env.session() as s:
        left = {d.id for d in deliveries.list_deliveries(s)}
    assert left == {ids["old_failed"], ids["new_processed"]}


# --------------------------------------------------------------------------- the forking worker


@pytest.mark.redis
def test_forking_worker_processes_jobs_in_a_fresh_process(real_env: Env) -> None:
    """`orgsync worker` forks a work horse per job; the job must use its own
    database connections (the parent's are dropped in the child). Real Redis
    only: a forked child cannot share the in-process stand-in."""
    env = real_env
    ws = env.add_org()
    queues.enqueue_full_sync(env.redis, ws, trigger="operator")
    jobs.OrgsyncWorker(queues.all_queues(env.redis), connection=env.redis).work(
        burst=True, with_scheduler=True, logging_level="WARNING")
    assert [r["result"] for r in env.runs()] == ["ok"]


def test_sweep_requeues_a_delivery_whose_worker_died_while_rq_still_says_started(env: Env) -> None:
    """A killed worker's job stays "started" in RQ until RQ notices; once the
    delivery has been processing for longer than the job timeout, no worker
    can still be running it, and the stale record must not block the re-queue."""
    from rq.job import JobStatus

    env.add_org()
    env.server.github.add_member(9001, 21, "user21", "member")
    delivery = env.record_member_event(21)
    job_id = queues.enqueue_delivery(env.redis, delivery)
    job = queues.fetch_job(env.redis, job_id)
    assert job is not None
    job.set_status(JobStatus.STARTED)
    Queue("webhooks", connection=env.redis).remove(job_id)  # a worker had dequeued it
    overdue = datetime.now(UTC) - timedelta(seconds=queues.DELIVERY_TIMEOUT + 60)
    _set(env, delivery, status="processing", started_at=overdue, queued_at=overdue, attempts=1, job_id=job_id)
    recent = env.record_member_event(22)
    recent_job = queues.enqueue_delivery(env.redis, recent)
    started = queues.fetch_job(env.redis, recent_job)
    assert started is not None
    started.set_status(JobStatus.STARTED)
    Queue("webhooks", connection=env.redis).remove(recent_job)
    # Started recently (stale by the sweep's measure, within the job timeout): left to RQ.
    stale = datetime.now(UTC) - timedelta(minutes=3)
    _set(env, recent, status="processing", started_at=stale, queued_at=stale, attempts=1, job_id=recent_job)

    assert jobs.sweep() == {"requeued": 1, "gave_up": 0}
    assert env.delivery(delivery)["status"] == "queued"
    assert env.delivery(recent)["status"] == "processing"
    env.drain()
    assert env.delivery(delivery)["status"] == "processed"
