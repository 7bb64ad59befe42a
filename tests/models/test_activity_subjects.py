"""SPEC section 3: a roster member's activity entries name the member's
account id when there is one (else ``<provider>:<numeric id>``), with the
provider id and login in the details; migration 0005 rewrites the entries
written before under the old, per-action conventions."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models import store
from models.base import make_engine, make_session_factory, session_scope
from models.migrate import upgrade
from models.tables import Activity


def _entries(db_url: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Activity.action, Activity.subject, Activity.details)
                                .where(Activity.action.like("member.%")).order_by(Activity.seq)).all()
        return [(a, s, d or {}) for a, s, d in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_member_entries_name_the_account_else_the_provider_id(db_url: str, provider: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        alice, _ = store.get_or_create_user_for_identity(s, provider, 1, "alice", actor="test")
        alice_id = alice.id
        ws = store.create_provider_workspace(s, provider, 500, "acme", actor="test")
        store.apply_roster_changes(s, ws, adds=[store.StoredMember(1, "alice", "member"),
                                                store.StoredMember(2, "bob", "member")], actor="test")
        store.apply_roster_changes(s, ws, role_changes=[(store.StoredMember(1, "alice", "admin"), "member"),
                                                        (store.StoredMember(2, "bob", "admin"), "member")],
                                   actor="test")
        store.apply_roster_changes(s, ws, removals=[1, 2], actor="test")
    engine.dispose()
    got = [(a, s, d.get("provider_user_id"), d.get("login")) for a, s, d in _entries(db_url)]
    assert got == [
        ("member.added", alice_id, 1, "alice"),
        ("member.added", f"{provider}:2", 2, "bob"),
        ("member.role_changed", alice_id, 1, "alice"),
        ("member.role_changed", f"{provider}:2", 2, "bob"),
        ("member.removed", alice_id, 1, "alice"),
        ("member.removed", f"{provider}:2", 2, "bob"),
    ]


def test_migration_0005_rewrites_old_subjects(db_url: str) -> None:
    upgrade(db_url, "0004")  # the revision before 0005
    engine = make_engine(db_url)
    with session_scope(make_session_factory(engine)) as s:
        alice, _ = store.get_or_create_user_for_identity(s, "github", 1, "alice", actor="test")
        alice_id = alice.id
        ws = store.create_provider_workspace(s, "github", 500, "acme", actor="test")
        old = [  # as written before 0005
            ("member.added", "alice", {"provider_user_id": 1, "role": "member"}),
            ("member.added", "bob", {"provider_user_id": 2, "role": "member"}),
            ("member.role_changed", "bob", {"provider_user_id": 2, "from": "member", "to": "admin"}),
            ("member.removed", "1", {"provider_user_id": 1}),
            ("member.removed", "2", {"provider_user_id": 2}),
        ]
        store.log_activities(s, [store.ActivityEntry(ws.id, "sync:1", action, subject, details)
                                 for action, subject, details in old])
        # Entries that are not roster member entries keep their subject.
        store.log_activity(s, ws.id, "operator", "subscription.changed", ws.name, {"from": None, "to": "team"})
    engine.dispose()
    upgrade(db_url)
    got = [(a, s, d.get("provider_user_id"), d.get("login")) for a, s, d in _entries(db_url)]
    assert got == [
        ("member.added", alice_id, 1, "alice"),
        ("member.added", "github:2", 2, "bob"),
        ("member.role_changed", "github:2", 2, "bob"),
        ("member.removed", alice_id, 1, None),
        ("member.removed", "github:2", 2, None),
    ]
    engine = make_engine(db_url)
    with engine.connect() as conn:
        other = conn.execute(select(Activity.subject).where(Activity.action == "subscription.changed")).scalar_one()
    engine.dispose()
    assert other == "acme"
