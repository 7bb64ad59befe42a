"""Where each org's periodic resync falls (worker/schedule.py): fixed
per-workspace slots, distinct, inside the interval, each org once per cycle."""
from __future__ import annotations

import pytest

from worker.schedule import resync_offset, resync_slots


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
