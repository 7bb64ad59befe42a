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
