"""Where each org's periodic resync falls (pure arithmetic, no I/O).

Each workspace has a fixed slot in the interval, ``sha256(workspace id) mod
ORGSYNC_RESYNC_INTERVAL``, plus a little random jitter, so N orgs are synced
evenly over the interval and an org's resync happens at the same point of
every cycle whichever process schedules it. sha256 and not ``hash()``:
Python salts ``hash`` per process. Used by the cron (worker/cron.py) and the
``schedule_resyncs`` job (worker/jobs.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

# How often schedule_resyncs runs, and so how far ahead it looks.
RESYNC_TICK = 60


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
