"""Wake-ups of lanes (runtime/queues.py): one pending wake-up per lane, and a
delivery arriving as a drain stops rings the bell again."""
from __future__ import annotations

from runtime import queues
from tests.worker_env import LANE, ORG_ID, Env, _statuses, _wake


def test_a_delivery_arriving_as_a_drain_stops_rings_the_bell_again(env: Env) -> None:
    env.add_org(members=3)
    env.server.github.add_member(ORG_ID, 60, "user60", "member")
    env.server.github.add_member(ORG_ID, 61, "user61", "member")
    first = env.record_member_event(60)
    _wake(env)
    env.drain()
    # The drain cleared the lane's flag: the next delivery's wake-up is queued.
    assert queues.pending_wake(env.redis, LANE) is None
    second = env.record_member_event(61)
    assert queues.wake(env.redis, LANE) is not None
    assert queues.wake(env.redis, LANE) is None  # pending: one round trip, nothing queued
    env.drain()
    assert _statuses(env, [first, second]) == [("processed", 1), ("processed", 1)]
