"""The work pipeline's batch processor (sync/batch.py; SPEC section 7): the
deliveries table holds the work, RQ only runs wake-ups of lanes; a drain works
through a lane's due deliveries under its lease.

Drains run through real RQ workers (burst mode) over fakeredis and real
Redis, on SQLite and PostgreSQL where it matters. Outcomes are what an
operator sees: delivery statuses, attempts, due times, sync runs, rosters,
and the requests the fake provider received. Time passing is simulated by
moving due times and leases into the past, never by sleeping. The other parts
of the pipeline: the sweep in tests/worker/test_jobs.py, wake-ups in
tests/runtime/test_queues.py, a lane's burst budget in tests/models/test_lanes.py.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from models import deliveries, lanes
from models.store import RunResult
from models.tables import Delivery, utcnow
from runtime import operations
from sync import batch
from sync.context import build_sync_context
from tests.worker_env import LANE, ORG_ID, Env, _roster, _statuses, _time_passes, _wake
from worker import jobs

# --------------------------------------------------------------------------- draining


def test_one_wake_up_drains_the_lane_in_one_batch_with_hints_merged(env_all_db: Env) -> None:
    env = env_all_db
    env.add_org(members=3)
    for uid in (10, 11):
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = [env.record_member_event(10), env.record_member_event(11), env.record_member_event(10)]
    _wake(env)
    _wake(env)  # a doubled wake-up costs nothing: the second finds nothing due
    env.server.github.reset_log()
    env.drain()
    assert _statuses(env, ids) == [("processed", 1)] * 3
    assert set(_roster(env)) == {10, 11}
    # Merged by user id: two distinct members, two membership reads (plus the
    # installation token), not three.
    assert env.server.github.count("/memberships/") == 2
    member_runs = env.runs("member")
    assert len(member_runs) == 1 and member_runs[0].details["members"] == 2


def test_a_drain_of_hints_takes_its_first_claim_and_state_with_the_lease(env_all_db: Env) -> None:
    """The transactions of one wake-up serving two hints with member reads:
    the lease, first claim and lane state together; the sync's two (open,
    apply); the hints' outcome; the release and last look. Five (seven before
    the claim and the state rode with the lease)."""
    from sqlalchemy import event

    env = env_all_db
    env.add_org(members=3)
    for uid in (10, 11):
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = [env.record_member_event(10), env.record_member_event(11)]
    _wake(env)
    commits: list[int] = []
    engine = env.runtime.engine
    listener = lambda conn: commits.append(1)
    event.listen(engine, "commit", listener)
    try:
        env.drain()
    finally:
        event.remove(engine, "commit", listener)
    assert _statuses(env, ids) == [("processed", 1)] * 2
    assert set(_roster(env)) == {10, 11}
    assert len(commits) == 5, len(commits)


def test_a_burst_beyond_the_listing_cost_is_served_by_one_full_listing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "SETTLE", 0.0)
    env.add_org(members=3)
    uids = list(range(100, 140))
    for uid in uids:
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = [env.record_member_event(uid) for uid in uids]
    _wake(env)
    env.server.github.reset_log()
    env.drain()
    assert {s for s, _ in _statuses(env, ids)} == {"processed"}
    assert set(_roster(env)) == {1, 2, 3, *uids}
    # 40 hints on an org of 43: one listing (admins + members pages, the org
    # read) instead of 40 single reads.
    assert env.server.github.count("/memberships/") == 0
    assert env.server.github.count("/members") <= 3
    assert env.runs("full")[-1].trigger.startswith("webhooks:40 hints")
    assert env.delivery(ids[0])["outcome"]["via"] == "full_sync"


def test_the_read_budget_holds_for_a_burst_cut_into_many_small_batches(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 2 (each well under the listing cost) must not add up to one
    # single read per hint: the lane counts the reads of its burst.
    monkeypatch.setattr(batch, "CLAIM_LIMIT", 2)
    monkeypatch.setattr(batch, "SETTLE", 0.0)
    env.add_org(members=3)
    uids = list(range(200, 230))
    for uid in uids:
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = []
    env.server.github.reset_log()
    for uid in uids:
        ids.append(env.record_member_event(uid))
        with env.session() as s:
            s.execute(update(Delivery).where(Delivery.id == ids[-1]).values(due_at=utcnow()))
        # One delivery at a time, each drained before the next arrives.
        ctx = build_sync_context(env.runtime.settings, env.runtime.session_factory)
        batch.Drain(ctx, LANE, "test-holder", clear_wake=lambda: None, wake=lambda lane: None,
                    claim_limit=2).run()
    assert {s for s, _ in _statuses(env, ids)} == {"processed"}
    assert set(_roster(env)) >= set(uids)
    listing_cost = 1 + batch.HINT_CONSTANT  # ⌈N/100⌉ + c for a roster under 100
    single_reads = env.server.github.count("/memberships/")
    assert single_reads <= listing_cost
    # Past the budget, each later hint costs at most one cheap listing.
    assert env.server.github.request_count <= single_reads + (len(uids) - single_reads) * 4 + 4


@pytest.mark.parametrize("listings, waits", [(0, 30), (1, 60), (2, 120), (3, 240), (4, 480), (9, 480)])
def test_a_burst_that_does_not_pause_waits_longer_for_each_listing_it_has_had(
    env: Env, monkeypatch: pytest.MonkeyPatch, listings: int, waits: float
) -> None:
    """A burst that never pauses is listed after ``listing_wait``: 30 s for
    its first listing, doubling with each one it has had, at most 8 min."""
    env.add_org(members=3)
    clock = [utcnow()]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    monkeypatch.setattr(batch, "utcnow", lambda: clock[0])
    # Deliveries keep arriving: the newest pending one is always brand new.
    monkeypatch.setattr(batch.deliveries, "newest_pending", lambda s, lane: clock[0])
    ctx = build_sync_context(env.runtime.settings, env.runtime.session_factory)
    drain = batch.Drain(ctx, LANE, "h", clear_wake=lambda: None, wake=lambda lane: None, sleep=sleep)
    row = deliveries.Claimed(id="x", provider="github", event="organization", action="member_added",
                             hint_user_id=5, attempts=1, received_at=clock[0])
    drain._settle([row], batch._Lane(env.workspace_id, "github", "active", 77), batch.listing_wait(listings))
    assert sum(slept) == pytest.approx(waits, abs=0.3)


def test_hints_are_applied_in_the_order_received(env: Env) -> None:
    env.add_org(members=3)
    env.server.github.add_member(ORG_ID, 50, "user50", "member")
    first = env.record_member_event(50, action="member_added")
    env.server.github.remove_member(ORG_ID, 50)
    second = env.record_member_event(50, action="member_removed")
    _wake(env)
    env.drain()
    # The provider's answer decides, read once for both hints.
    assert _statuses(env, [first, second]) == [("processed", 1), ("processed", 1)]
    assert 50 not in _roster(env)


# --------------------------------------------------------------------------- failures


def test_a_transient_error_makes_the_batch_due_again_and_the_sweep_retries_it(env: Env) -> None:
    env.add_org(members=3)
    env.server.github.add_member(ORG_ID, 7, "user7", "member")
    d = env.record_member_event(7)
    env.server.github.fail("/memberships/", 502, times=1)
    _wake(env)
    env.drain()
    row = env.delivery(d)
    assert (row["status"], row["attempts"]) == ("retrying", 1) and "502" in row["error"]
    assert row["due_at"] is not None and 7 not in _roster(env)
    # Not due yet: the sweep leaves it alone.
    assert jobs.sweep()["woken"] == 0
    _time_passes(env)
    assert jobs.sweep()["woken"] == 1
    env.drain()
    assert _statuses(env, [d]) == [("processed", 2)]
    assert 7 in _roster(env)


def test_a_delivery_that_keeps_failing_is_marked_failed_and_can_be_replayed(env: Env) -> None:
    env.add_org(members=3)
    env.server.github.add_member(ORG_ID, 8, "user8", "member")
    d = env.record_member_event(8)
    env.server.github.fail("/memberships/", 502, times=None)
    for _ in range(batch.MAX_ATTEMPTS):
        _time_passes(env)
        jobs.sweep()
        env.drain()
    row = env.delivery(d)
    assert (row["status"], row["attempts"]) == ("failed", batch.MAX_ATTEMPTS)
    assert "gave up" in row["error"]
    assert jobs.sweep()["woken"] == 0  # failed is finished for the sweep
    env.server.github.clear_faults()
    with env.session() as s:
        result = operations.replay_delivery(s, env.redis, d)
    assert result.status == "queued"
    env.drain()
    assert _statuses(env, [d]) == [("processed", 1)]


def test_a_rate_limited_batch_is_deferred_to_the_reset_and_removes_nothing(env: Env) -> None:
    import time

    env.add_org(members=3)
    with env.session() as s:
        # The stored roster has user 3; the provider still lists them.
        from models import store

        ws = store.get_workspace(s, env.workspace_id)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(3, "user3", "member")], actor="test")
    env.server.github.remove_member(ORG_ID, 2)
    d = env.record_member_event(2, action="member_removed")
    reset = int(time.time()) + 600
    env.server.github.rate_limit("primary", reset=reset, path_contains="/memberships/")
    _wake(env)
    env.drain()
    row = env.delivery(d)
    assert row["status"] == "deferred" and row["attempts"] == 0  # not a failure, not an attempt
    assert abs(__import__("datetime").datetime.fromisoformat(row["due_at"]).timestamp() - reset) < 2
    assert 3 in _roster(env)
    _time_passes(env)
    jobs.sweep()
    env.drain()
    assert _statuses(env, [d]) == [("processed", 1)]


# --------------------------------------------------------------------------- leases


def test_a_killed_workers_batch_is_claimed_again_after_its_lease(env_all_db: Env) -> None:
    env = env_all_db
    env.add_org(members=3)
    env.server.github.add_member(ORG_ID, 9, "user9", "member")
    d = env.record_member_event(9)
    # A worker claims the batch, then dies (no release, no heartbeat).
    with env.session() as s:
        assert lanes.acquire(s, LANE, "dead-worker", batch.LEASE)
        [claimed] = deliveries.claim_due(s, LANE, "dead-worker", batch.LEASE)
    assert claimed.id == d
    # While the lease holds, nobody else takes it, and the sweep leaves it.
    _wake(env)
    env.drain()
    assert env.delivery(d)["status"] == "processing"
    assert jobs.sweep()["woken"] == 0
    _time_passes(env)  # the lease runs out
    assert jobs.sweep()["woken"] == 1
    env.drain()
    assert _statuses(env, [d]) == [("processed", 2)]
    assert 9 in _roster(env)


def test_a_drain_that_finds_the_lane_held_leaves_it_to_the_holder(env: Env) -> None:
    env.add_org(members=3)
    with env.session() as s:
        assert lanes.acquire(s, LANE, "other", batch.LEASE)
    ctx = build_sync_context(env.runtime.settings, env.runtime.session_factory)
    report = batch.drain(ctx, LANE, "me", clear_wake=lambda: None, wake=lambda lane: None)
    assert report.busy and report.claimed == 0


@pytest.mark.postgres
def test_two_workers_draining_one_org_never_apply_a_hint_twice(env_all_db: Env) -> None:
    env = env_all_db
    env.add_org(members=3)
    uids = list(range(300, 320))
    for uid in uids:
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    ids = [env.record_member_event(uid) for uid in uids]
    ctx = build_sync_context(env.runtime.settings, env.runtime.session_factory)
    reports: list[Any] = []

    def worker(name: str) -> None:
        for _ in range(5):
            reports.append(batch.drain(ctx, LANE, name, clear_wake=lambda: None, wake=lambda lane: None))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _statuses(env, ids) == [("processed", 1)] * len(ids)
    assert sum(r.processed for r in reports) == len(ids)
    from models.tables import Activity

    with env.session() as s:
        added = [a.details["provider_user_id"] for a in s.scalars(
            select(Activity).where(Activity.action == "member.added"))]
    # Each member added exactly once, whichever worker served which hint.
    assert sorted(added) == sorted(set(added)) and set(uids) <= set(added)


# --------------------------------------------------------------------------- full syncs owed


def test_resync_requests_coalesce_and_a_trigger_during_a_sync_gets_one_more(env: Env) -> None:
    env.add_org(members=3)
    with env.session() as s:
        operations.resync(s, env.redis, "acme")
        operations.resync(s, env.redis, "acme", force=True)
    with env.session() as s:
        lane = lanes.get(s, LANE)
        # Joined: one owed full sync on the lane, forced by the second trigger.
        assert lane is not None and lane.full_sync_force and lane.full_sync_trigger == "operator"

    # A trigger that arrives while the sync runs owes the org one more sync.
    real = batch.orgs.full_sync
    calls: list[str] = []

    def full_sync(ctx: Any, ws_id: str, **kw: Any) -> RunResult:
        calls.append(kw["trigger"])
        if len(calls) == 1:
            with env.session() as s:
                lanes.request_full_sync(s, LANE, trigger="late")
        return real(ctx, ws_id, **kw)

    batch.orgs.full_sync = full_sync  # type: ignore[assignment]
    try:
        env.drain()
    finally:
        batch.orgs.full_sync = real  # type: ignore[assignment]
    assert calls == ["operator", "late"]
    assert [r.forced for r in env.runs("full")] == [True, False]


def test_a_burst_of_removals_costs_one_listing_and_no_second_check(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "SETTLE", 0.0)
    from models import store

    env.add_org(members=3)
    uids = list(range(400, 437))
    for uid in uids:
        env.server.github.add_member(ORG_ID, uid, f"user{uid}", "member")
    with env.session() as s:
        ws = store.get_workspace(s, env.workspace_id)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(u, f"user{u}", "member") for u in uids],
                                   actor="test")
    leaving = uids[:12]  # 12 of 37: under the mass-removal guard
    for uid in leaving:
        env.server.github.remove_member(ORG_ID, uid)
    ids = [env.record_member_event(uid, action="member_removed") for uid in leaving]
    _wake(env)
    env.server.github.reset_log()
    env.drain()
    assert {s for s, _ in _statuses(env, ids)} == {"processed"}
    assert not set(leaving) & set(_roster(env))
    # One listing (the admins' and the members' pages); the removals it found
    # were each hinted by a webhook, so no member is read again one by one.
    assert env.server.github.count("/memberships/") == 0
    assert env.server.github.count("/members") == 2
    run = env.runs("full")[-1]
    assert run.removed == len(leaving) and run.details["removal_check"]["method"] == "hinted"
