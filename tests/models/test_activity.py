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


def test_a_runs_entries_are_found_by_index_not_by_walking_the_log(pg_schema_url: str) -> None:
    """``activity_seqs`` by actor (a drain records each sync's entries in its
    deliveries' outcome) is an index range scan on PostgreSQL at head, not a
    walk of the whole log in sequence order (which it was, once per drain,
    with no index on the actor)."""
    from sqlalchemy import insert, text

    from models.activity import activity_seqs, activity_seqs_query
    from models.base import make_engine, make_session_factory
    from models.migrate import upgrade
    from models.tables import Activity

    upgrade(pg_schema_url)
    engine = make_engine(pg_schema_url)
    sessions = make_session_factory(engine)
    try:
        with sessions.begin() as s:
            s.execute(insert(Activity), [
                {"seq": i, "workspace_id": None, "actor": f"sync:{i // 10}", "action": "member.added"}
                for i in range(1, 50_001)])
            s.execute(text("ANALYZE activity"))
        with sessions() as s:
            assert activity_seqs(s, ["sync:4321"], limit=100) == list(range(43210, 43220))
            query = activity_seqs_query(["sync:4321"], limit=100).compile(
                dialect=engine.dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join(row[0] for row in s.execute(text(f"EXPLAIN {query}")))
        assert "ix_activity_actor_seq" in plan, plan
    finally:
        engine.dispose()
