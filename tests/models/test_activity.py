"""The activity log (models/activity.py): numbered in commit order, in the
change's own transaction; on SQLite and PostgreSQL."""
from __future__ import annotations

from models import store
from tests.models.store_helpers import _actions


def test_activity_sequence_is_monotonic_and_in_the_same_transaction(session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        store.create_user(s, "alice")
        s.commit()
    with session_factory() as s:
        ws = store.find_workspace(s, "alice")
        store.set_subscription(s, ws, "pro")
        s.rollback()  # the change and its entry go together
    with session_factory() as s:
        ws = store.find_workspace(s, "alice")
        assert ws.subscription_plan is None
        assert _actions(s, ws) == ["workspace.created", "ownership.changed"]
        store.set_subscription(s, ws, "pro")
        s.commit()
        seqs = [a.seq for a in store.list_activity(s, limit=100)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert store.list_activity(s, after=seqs[-2])[0].action == "subscription.changed"
