"""Work lanes (models/lanes.py): a burst counts its single reads and listings, and
a lane that went quiet starts over; on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

from models import lanes
from models.tables import utcnow
from sync import batch
from tests.worker_env import LANE, Env


def test_the_burst_counts_its_listings_and_a_quiet_lane_starts_over(env_all_db: Env) -> None:
    env = env_all_db
    env.add_org(members=3)
    quiet = batch.BURST_QUIET
    t0 = utcnow()
    with env.session() as s:
        lanes.acquire(s, LANE, "h", batch.LEASE)
        lanes.spend_reads(s, LANE, 5, quiet=quiet, now=t0)
        lanes.listed(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=2))
        lanes.listed(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=4))
        same = lanes.hint_budget(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=5))
        later = lanes.hint_budget(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=4) + quiet * 2)
        lanes.listed(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=4) + quiet * 2)
        fresh = lanes.hint_budget(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=5) + quiet * 2)
    # Two listings in one burst; its single reads are not refilled by them.
    assert (same.reads, same.listings) == (5, 2)
    assert (later.reads, later.listings) == (0, 0)
    assert (fresh.reads, fresh.listings) == (0, 1)


def test_hint_state_reads_in_one_statement_what_the_three_reads_say(env_all_db: Env) -> None:
    """The drain's one-statement read (workspace, roster size, budget) agrees
    with workspace_state, roster_count and hint_budget, before the lane has a
    row, within a burst and after the lane went quiet."""
    from sqlalchemy import event

    from models import store

    env = env_all_db
    env.add_org(members=3)
    provider, org_id = lanes.parse_lane(LANE)
    assert org_id is not None
    quiet = batch.BURST_QUIET
    t0 = utcnow()

    def both(s, now):  # type: ignore[no-untyped-def]
        statements: list[str] = []
        listen = lambda *a: statements.append(a[2])
        event.listen(s.get_bind(), "before_cursor_execute", listen)
        try:
            one = lanes.hint_state(s, provider, org_id, LANE, quiet=quiet, now=now)
        finally:
            event.remove(s.get_bind(), "before_cursor_execute", listen)
        ws = store.workspace_state(s, provider, org_id)
        three = (ws, store.roster_count(s, ws.id), lanes.hint_budget(s, LANE, quiet=quiet, now=now))
        assert one is not None
        return (one.workspace, one.roster_count, one.budget), three, len(statements)

    with env.session() as s:
        ws = store.get_workspace(s, env.workspace_id)
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(u, f"user{u}", "member") for u in (1, 2, 3)],
                                   actor="test")
    with env.session() as s:
        one, three, n = both(s, t0)  # no lane row yet
        assert one == three and n == 1
        assert one[1] == 3 and one[2] == lanes.HintBudget(0, None)
        lanes.acquire(s, LANE, "h", batch.LEASE)
        lanes.spend_reads(s, LANE, 2, quiet=quiet, now=t0)
        lanes.listed(s, LANE, quiet=quiet, now=t0 + timedelta(seconds=1))
        one, three, n = both(s, t0 + timedelta(seconds=2))
        assert one == three and n == 1
        assert (one[2].reads, one[2].listings) == (2, 1)
        one, three, n = both(s, t0 + timedelta(seconds=2) + quiet * 2)  # quiet: a fresh budget
        assert one == three and n == 1
        assert (one[2].reads, one[2].listings) == (0, 0) and one[2].last_listing_at is not None
        assert lanes.hint_state(s, provider, org_id + 1, LANE, quiet=quiet) is None
