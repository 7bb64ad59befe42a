"""Who is in a workspace (models/memberships.py): invitations and requests, and
the access a roster member gains with an account; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models import store
from models.errors import CannotInvite
from tests.models.store_helpers import _actions, _user


@pytest.mark.parametrize("kind", ["personal", "provider"])
def test_invitations_are_refused_for_personal_and_provider(session: Session, kind: str) -> None:
    alice = store.create_user(session, "alice")
    bob = store.create_user(session, "bob")
    if kind == "personal":
        ws = store.find_workspace(session, "alice")
        match = "personal workspace cannot have other members"
    else:
        ws = store.create_provider_workspace(session, "github", 1, "acme", actor="test", owner=alice)
        match = "come from github"
    before = _actions(session, ws)
    with pytest.raises(CannotInvite, match=match):
        store.invite(session, ws, bob)
    assert _actions(session, ws) == before
    assert [m["user"]["id"] for m in store.members(session, ws) if m["user"]] == [alice.id]


def test_managed_workspace_invite_then_approve(session: Session) -> None:
    alice = store.create_user(session, "alice")
    bob = store.create_user(session, "bob")
    ws = store.create_managed_workspace(session, "team-x", alice)
    inv = store.invite(session, ws, bob)
    store.request_join(session, inv, actor="bob")
    store.decide_invitation(session, inv, True)
    assert store.role_in(session, ws, bob) == "member"
    assert _actions(session, ws)[-2:] == ["member.invited", "member.added"]


def test_roster_member_without_account_gains_access_on_first_login(session: Session) -> None:
    owner = _user(session, "owner", uid=1)
    ws = store.create_provider_workspace(session, "github", 5, "org", actor="t", owner=owner)
    store.apply_roster_changes(session, ws, actor="s", adds=[store.StoredMember(1, "owner", "admin"),
                                                             store.StoredMember(77, "newbie", "member")])
    listed = {m["login"]: m for m in store.members(session, ws)}
    assert listed["newbie"]["user"] is None and listed["newbie"]["access"] is False
    newbie, _ = store.get_or_create_user_for_identity(session, "github", 77, "newbie", actor="login")
    assert store.role_in(session, ws, newbie) == "member"
    # Logins are labels: a renamed user keeps their access.
    store.get_or_create_user_for_identity(session, "github", 77, "newbie-renamed", actor="login")
    assert store.role_in(session, ws, newbie) == "member"
    assert store.roster(session, ws.id)[77].login == "newbie-renamed"
